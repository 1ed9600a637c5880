#pragma once
// The input list of a batch job: the same on every rank, so that each can compute its own share.

#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

namespace rmt::batch {

// The image files under a directory (walked recursively, image extensions only, see
// rmt::has_image_extension), sorted by bytes. A walk that fails part way sets `error` and returns
// what it found until then.
std::vector<std::string> images_in_directory(const std::string& directory, std::error_code& error);

// The paths of a file list, one per line, in order (blank lines skipped, a trailing '\r' removed).
// Throws std::runtime_error when it cannot be read.
std::vector<std::string> read_file_list(const std::string& path);

struct InputListing {
  // Sorted by bytes (not by locale), without duplicates.
  std::vector<std::string> files;
  int64_t duplicates = 0;                      // paths given more than once, dropped
  std::vector<std::string> empty_directories;  // directories given that held no image
};

// Every path given that is not a directory (kept even when it does not exist: it then fails to
// decode and is reported with the results), the images_in_directory of every directory given, and
// every path listed in the
// list files (one per line, as written: relative paths are relative to the working directory;
// blank lines skipped). Throws std::runtime_error when a list file cannot be read or a directory
// cannot be walked: ranks that saw different lists would mix up their shares.
InputListing list_inputs(const std::vector<std::string>& paths,
                         const std::vector<std::string>& list_files = {});

}  // namespace rmt::batch
