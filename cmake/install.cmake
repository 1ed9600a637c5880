# Installation of rmt: headers, the shared library, the command-line tools and a CMake package, so
# that another project can write
#
#   find_package(rmt CONFIG REQUIRED)        # finds LibTorch too
#   target_link_libraries(app PRIVATE rmt::rmt)
#
# Included at the end of the top-level CMakeLists.txt (after the targets exist).

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# rmt/version.h, from project(rmt VERSION ...).
configure_file(${PROJECT_SOURCE_DIR}/include/rmt/version.h.in
               ${PROJECT_BINARY_DIR}/include/rmt/version.h @ONLY)
target_include_directories(rmt PUBLIC $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>)
# The headers need C++17; say so to projects linking rmt::rmt.
target_compile_features(rmt PUBLIC cxx_std_17)

set(RMT_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/rmt CACHE STRING
    "Where rmtConfig.cmake is installed, relative to the prefix")

# Installed binaries find librmt in ../lib and LibTorch where it was when they were linked.
set_target_properties(rmt PROPERTIES INSTALL_RPATH_USE_LINK_PATH TRUE)
set(_rmt_tools)
foreach(_tool rmt-infer rmt-classify rmt-extract rmt-convert rmt-inspect)
  if(TARGET ${_tool})
    set_target_properties(${_tool} PROPERTIES
      INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}"
      INSTALL_RPATH_USE_LINK_PATH TRUE)
    list(APPEND _rmt_tools ${_tool})
  endif()
endforeach()

install(TARGETS rmt EXPORT rmtTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# (rmt's INSTALL_INTERFACE include directory is <prefix>/include, set where the target is made.)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/rmt
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/include/rmt/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/rmt)
if(_rmt_tools)
  install(TARGETS ${_rmt_tools} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

install(EXPORT rmtTargets NAMESPACE rmt:: DESTINATION ${RMT_INSTALL_CMAKEDIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/rmtConfig.cmake.in
  ${PROJECT_BINARY_DIR}/rmtConfig.cmake
  INSTALL_DESTINATION ${RMT_INSTALL_CMAKEDIR})
# 0.x: minor versions may break the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/rmtConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/rmtConfig.cmake ${PROJECT_BINARY_DIR}/rmtConfigVersion.cmake
  DESTINATION ${RMT_INSTALL_CMAKEDIR})
