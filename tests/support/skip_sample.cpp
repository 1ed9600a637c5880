// A program for the `skip_report` test (tests/skip_report.cmake): one test that skips, one that
// passes, one that fails; the test runs subsets of them and checks main()'s exit status.
#include <gtest/gtest.h>

TEST(SkipSample, Skips) { GTEST_SKIP() << "skipped on purpose"; }
TEST(SkipSample, Passes) { EXPECT_EQ(1 + 1, 2); }
TEST(SkipSample, Fails) { EXPECT_EQ(1 + 1, 3) << "fails on purpose"; }
