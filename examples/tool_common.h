#pragma once
// What the command-line tools share: option parsing of dtype and device, and the error convention
// (the message on stderr as "tool: error: ...", exit status 1).
#include <iostream>
#include <stdexcept>
#include <string>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include "rmt/runtime/threads.h"
#include "rmt/runtime/wait_policy.h"

// Every tool is one source file that includes this header once: its OpenMP threads wait with
// rmt's default spin count unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT.
RMT_OPENMP_WAIT_POLICY_PREINIT();

namespace rmt::tools {

inline torch::Dtype parse_dtype(const std::string& name) {
  if (name == "float32") return torch::kFloat32;
  if (name == "float64") return torch::kFloat64;
  if (name == "float16") return torch::kFloat16;
  if (name == "bfloat16") return torch::kBFloat16;
  throw std::invalid_argument(
      fmt::format("--dtype: expected float32, float64, float16 or bfloat16, found '{}'", name));
}

inline torch::Device parse_device(const std::string& name) {
  if (name != "cpu" && name != "cuda") {
    throw std::invalid_argument(fmt::format("--device: expected cpu or cuda, found '{}'", name));
  }
  if (name == "cuda" && !torch::cuda::is_available()) {
    throw std::runtime_error("--device cuda: no CUDA device is available");
  }
  return torch::Device(name);
}

// Runs the tool's body; any exception becomes "tool: error: message" and exit status 1.
template <typename Body>
int run_tool(const char* tool, Body&& body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    fmt::print(stderr, "{}: error: {}\n", tool, e.what_without_backtrace());
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", tool, e.what());
  }
  return 1;
}

}  // namespace rmt::tools
