#include "rmt/batch/inputs.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <fmt/format.h>

#include "rmt/data/image.h"

namespace rmt::batch {

namespace fs = std::filesystem;

std::vector<std::string> images_in_directory(const std::string& directory, std::error_code& error) {
  std::vector<std::string> found;
  error.clear();
  try {
    for (fs::recursive_directory_iterator
             it(directory, fs::directory_options::skip_permission_denied, error),
         end;
         !error && it != end; it.increment(error)) {
      std::error_code file_error;
      if (it->is_regular_file(file_error) && has_image_extension(it->path().string())) {
        found.push_back(it->path().string());
      }
    }
  } catch (const fs::filesystem_error& e) {
    error = e.code();
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::vector<std::string> read_file_list(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open the file list", path));
  std::vector<std::string> files;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) files.push_back(line);
  }
  if (in.bad()) throw std::runtime_error(fmt::format("{}: cannot read the file list", path));
  return files;
}

InputListing list_inputs(const std::vector<std::string>& paths,
                         const std::vector<std::string>& list_files) {
  InputListing listing;
  for (const auto& list : list_files) {
    auto files = read_file_list(list);
    listing.files.insert(listing.files.end(), files.begin(), files.end());
  }
  for (const auto& path : paths) {
    std::error_code error;
    if (!fs::is_directory(path, error)) {
      listing.files.push_back(path);
      continue;
    }
    auto found = images_in_directory(path, error);
    if (error) {
      throw std::runtime_error(
          fmt::format("{}: cannot walk the directory ({})", path, error.message()));
    }
    if (found.empty()) listing.empty_directories.push_back(path);
    listing.files.insert(listing.files.end(), found.begin(), found.end());
  }
  std::sort(listing.files.begin(), listing.files.end());
  const auto last = std::unique(listing.files.begin(), listing.files.end());
  listing.duplicates = static_cast<int64_t>(listing.files.end() - last);
  listing.files.erase(last, listing.files.end());
  return listing;
}

}  // namespace rmt::batch
