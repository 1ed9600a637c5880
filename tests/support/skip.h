#pragma once
// The exit status of a test program that only skipped (tests/support/main.cpp), registered with
// CTest as SKIP_RETURN_CODE: the automake convention.
namespace rmt::test {
constexpr int kSkipExitCode = 77;
}
