# Included by tests/CMakeLists.txt. `skip_report`: a test program whose tests all skip exits 77
# (tests/support/main.cpp), which CTest reports as skipped (SKIP_RETURN_CODE); one that also
# passes or fails a test exits 0 or 1 as before. Checked on skip_sample's three tests.
# Included after single_libtorch.cmake: skip_sample links no LibTorch, which that check requires.
add_executable(skip_sample ${CMAKE_CURRENT_SOURCE_DIR}/support/skip_sample.cpp)
target_link_libraries(skip_sample PRIVATE rmt_test_main)
add_test(NAME skip_report
         COMMAND ${CMAKE_COMMAND} -DPROGRAM=$<TARGET_FILE:skip_sample>
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/skip_report_check.cmake)
set_tests_properties(skip_report PROPERTIES TIMEOUT 60)
