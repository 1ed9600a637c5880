#include <gtest/gtest.h>
#include <torch/cuda.h>
TEST(MasaOpsCuda, Placeholder) { if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU"; }
