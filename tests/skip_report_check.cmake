# cmake -DPROGRAM=skip_sample -P skip_report_check.cmake (see skip_report.cmake).
foreach(case "Skips:77" "Skips:Passes:0" "Skips:Fails:1" "*:1")
  string(REGEX MATCH "[0-9]+$" expected "${case}")
  string(REGEX REPLACE ":[0-9]+$" "" tests "${case}")
  string(REPLACE ":" ":SkipSample." filter "SkipSample.${tests}")
  if(tests STREQUAL "*")
    set(filter "*")
  endif()
  execute_process(COMMAND "${PROGRAM}" "--gtest_filter=${filter}" RESULT_VARIABLE status
                  OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT status STREQUAL expected)
    message(FATAL_ERROR "skip_sample --gtest_filter=${filter}: expected exit status ${expected}, "
                        "found ${status}\n${out}")
  endif()
  message(STATUS "--gtest_filter=${filter}: exit status ${status}")
endforeach()
