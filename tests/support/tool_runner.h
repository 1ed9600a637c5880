#pragma once
// Helpers of the tests that run the command-line tools and write scratch files.
#include <ftw.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace rmt::test {

// Not std::filesystem::remove_all: the copy libtorch.so exports (and that wins at link time) calls
// recursive_directory_iterator::__erase, which Debian 12's libstdc++ lacks, and crashes.
inline int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }
inline void remove_tree(const std::string& path) {
  ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// Where a tool is: given by CMake as RMT_<TOOL>_EXE (tests/*.cmake), else next to the test in the
// build tree (build/tests/test_x -> build/examples/<tool>). Inline in each test program, so each
// sees its own definitions.
inline std::string tool_path(const std::string& tool) {
#ifdef RMT_CLASSIFY_EXE
  if (tool == "rmt-classify") return RMT_CLASSIFY_EXE;
#endif
#ifdef RMT_INFER_EXE
  if (tool == "rmt-infer") return RMT_INFER_EXE;
#endif
#ifdef RMT_INSPECT_EXE
  if (tool == "rmt-inspect") return RMT_INSPECT_EXE;
#endif
#ifdef RMT_CONVERT_EXE
  if (tool == "rmt-convert") return RMT_CONVERT_EXE;
#endif
#ifdef RMT_EXTRACT_EXE
  if (tool == "rmt-extract") return RMT_EXTRACT_EXE;
#endif
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (self.parent_path().parent_path() / "examples" / tool).string();
}

// A shell word: single-quoted, inner quotes escaped.
inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A whole file as bytes ("" when it cannot be read).
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct ToolResult {
  int status = -1;  // exit status; -1 when the tool did not exit normally (or does not exist)
  std::string out, err;
};

// Runs a tool with `args` (no shell interpretation of them), stdin closed, and captures its exit
// status, stdout and stderr through files in `scratch`. A missing executable is a test failure
// (the caller adds it: `exists` is false).
inline ToolResult run_tool(const std::string& tool, const std::vector<std::string>& args,
                           const std::filesystem::path& scratch, bool* exists = nullptr) {
  const std::string exe = tool_path(tool);
  if (exists) *exists = std::filesystem::exists(exe);
  if (!std::filesystem::exists(exe)) return {};
  const auto out = scratch / ".tool-stdout", err = scratch / ".tool-stderr";
  std::string command = quote(exe);
  for (const auto& a : args) command += " " + quote(a);
  command += " >" + quote(out.string()) + " 2>" + quote(err.string()) + " </dev/null";
  const int raw = std::system(command.c_str());
  ToolResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace rmt::test
