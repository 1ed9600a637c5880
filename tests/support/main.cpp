// The main() of every test program (in place of gtest_main): a program whose tests all skipped
// (GTEST_SKIP: no GPU, no reference file) exits with kSkipExitCode, which CTest reports as
// "Not Run (skipped)" instead of "Passed" (SKIP_RETURN_CODE, tests/CMakeLists.txt). A program with
// one passing or failing test reports as usual; its skipped tests are listed in its output.
#include <gtest/gtest.h>

#include "skip.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const int status = RUN_ALL_TESTS();
  const auto& unit = *testing::UnitTest::GetInstance();
  if (status == 0 && unit.successful_test_count() == 0 && unit.skipped_test_count() > 0) {
    return rmt::test::kSkipExitCode;
  }
  return status;
}
