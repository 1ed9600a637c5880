#include "rmt/batch/run_directory.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace rmt::batch {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

std::string system_error(const std::string& what) {
  return fmt::format("{}: {}", what, std::strerror(errno));
}

// Flushes a file (or a directory's entries) to disk.
void sync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) {
    throw std::runtime_error(system_error(fmt::format("{}: cannot open to flush it", path)));
  }
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  // Some file systems cannot fsync a directory; the rename itself is atomic either way.
  if (rc != 0 && !(directory && (saved == EINVAL || saved == EBADF))) {
    errno = saved;
    throw std::runtime_error(system_error(fmt::format("{}: cannot flush to disk", path)));
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open", path));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) throw std::runtime_error(fmt::format("{}: cannot read", path));
  return text.str();
}

// 64-bit mixing over 8-byte words (splitmix64's finaliser); fast enough to fingerprint large
// checkpoints at start-up.
struct Hasher {
  uint64_t h = 0x243f6a8885a308d3ULL;
  uint64_t length = 0;
  static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }
  void update(const char* data, size_t n) {
    length += n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t word;
      std::memcpy(&word, data + i, 8);
      h = mix(h ^ word) + 0x9e3779b97f4a7c15ULL;
    }
    uint64_t tail = 0;
    std::memcpy(&tail, data + i, n - i);
    h = mix(h ^ tail ^ (uint64_t(n - i) << 56));
  }
  std::string hex() const { return fmt::format("{:016x}", mix(h ^ length)); }
};

std::string padded(int64_t value) { return fmt::format("{:010}", value); }

std::vector<std::string> list_names(const std::string& directory) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(directory, ec), end; !ec && it != end; it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  if (ec) {
    throw std::runtime_error(
        fmt::format("{}: cannot list the directory ({})", directory, ec.message()));
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

std::string to_string(ChunkFormat format) {
  return format == ChunkFormat::Classes ? "classes" : "features";
}

ChunkFormat chunk_format_from_string(const std::string& name) {
  if (name == "classes") return ChunkFormat::Classes;
  if (name == "features") return ChunkFormat::Features;
  throw std::invalid_argument(fmt::format(
      "expected the output format classes or features, found '{}'", name.substr(0, 40)));
}

std::string chunk_extension(ChunkFormat format) {
  return format == ChunkFormat::Classes ? ".jsonl" : ".safetensors";
}

// ---- manifest ---------------------------------------------------------------------------------

std::string RunManifest::to_json() const {
  Json settings_json = Json::object();
  for (const auto& [k, v] : settings) settings_json[k] = v;
  return fmt::format("{}\n", Json{{"tool", tool},
                                   {"format", batch::to_string(format)},
                                   {"num_inputs", num_inputs},
                                   {"inputs_hash", inputs_hash},
                                   {"chunk_size", chunk_size},
                                   {"settings", settings_json}}
                                  .dump(2));
}

RunManifest RunManifest::from_json(const std::string& text, const std::string& name) {
  RunManifest m;
  try {
    const auto j = Json::parse(text);
    m.tool = j.at("tool").get<std::string>();
    m.format = chunk_format_from_string(j.at("format").get<std::string>());
    m.num_inputs = j.at("num_inputs").get<int64_t>();
    m.inputs_hash = j.at("inputs_hash").get<std::string>();
    m.chunk_size = j.at("chunk_size").get<int64_t>();
    for (const auto& [k, v] : j.at("settings").items()) m.settings[k] = v.get<std::string>();
  } catch (const std::exception& e) {
    throw std::runtime_error(
        fmt::format("{}: not a run manifest of rmt-classify or rmt-extract ({})", name,
                    std::string(e.what()).substr(0, 200)));
  }
  if (m.num_inputs < 0 || m.chunk_size < 1) {
    throw std::runtime_error(fmt::format("{}: the manifest's counts are out of range", name));
  }
  return m;
}

std::string RunManifest::differences(const RunManifest& other) const {
  std::string out;
  const auto compare = [&](const std::string& field, const std::string& a, const std::string& b) {
    if (a != b && out.size() < 800) {
      fmt::format_to(std::back_inserter(out), "  {}: {} vs {}\n", field, a.substr(0, 100),
                     b.substr(0, 100));
    }
  };
  compare("tool", tool, other.tool);
  compare("format", batch::to_string(format), batch::to_string(other.format));
  compare("number of inputs", fmt::to_string(num_inputs), fmt::to_string(other.num_inputs));
  compare("inputs hash", inputs_hash, other.inputs_hash);
  compare("chunk size", fmt::to_string(chunk_size), fmt::to_string(other.chunk_size));
  auto keys = settings;
  for (const auto& [k, v] : other.settings) keys.emplace(k, "");
  for (const auto& [k, unused] : keys) {
    const auto a = settings.find(k), b = other.settings.find(k);
    compare(k, a == settings.end() ? "(none)" : a->second,
            b == other.settings.end() ? "(none)" : b->second);
  }
  return out;
}

std::string inputs_text(const std::vector<std::string>& inputs) {
  std::string text;
  for (const auto& f : inputs) {
    text += f;
    text += '\n';
  }
  return text;
}

std::string fingerprint_text(const std::string& text) {
  Hasher h;
  h.update(text.data(), text.size());
  return h.hex();
}

std::string fingerprint_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open to fingerprint it", path));
  Hasher h;
  std::vector<char> buffer(size_t(1) << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    h.update(buffer.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw std::runtime_error(fmt::format("{}: cannot read to fingerprint it", path));
  return fmt::format("{} bytes, {}", h.length, h.hex());
}

// ---- atomic files -----------------------------------------------------------------------------

std::string temporary_path(const std::string& path) {
  const fs::path p(path);
  char host[64] = "host";
  ::gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = 0;
  const char* host_name = host;
  return (p.parent_path() /
          fmt::format(".{}.tmp.{}.{}", p.filename().string(), host_name, ::getpid()))
      .string();
}

void commit_file(const std::string& temporary, const std::string& path) {
  sync_path(temporary, false);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    throw std::runtime_error(system_error(fmt::format("cannot rename {} to {}", temporary, path)));
  }
  auto parent = fs::path(path).parent_path().string();
  sync_path(parent.empty() ? "." : parent, true);
}

void write_atomically(const std::string& path,
                      const std::function<void(const std::string&)>& write) {
  const std::string temporary = temporary_path(path);
  try {
    write(temporary);
    commit_file(temporary, path);
  } catch (...) {
    std::remove(temporary.c_str());
    throw;
  }
}

void write_text_atomically(const std::string& path, const std::string& text) {
  write_atomically(path, [&](const std::string& temporary) {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) throw std::runtime_error(fmt::format("{}: cannot write", temporary));
  });
}

// ---- the directory ----------------------------------------------------------------------------

RunDirectory::RunDirectory(std::string path) : path_(std::move(path)) {}

std::string RunDirectory::file(const std::string& name) const {
  return (fs::path(path_) / name).string();
}

void RunDirectory::open(const RunManifest& manifest, const std::vector<std::string>& inputs) const {
  std::error_code ec;
  for (const char* sub : {"chunks", "ranks"}) {
    fs::create_directories(fs::path(path_) / sub, ec);
    if (ec) {
      throw std::runtime_error(
          fmt::format("{}: cannot create the output directory ({})", path_, ec.message()));
    }
  }
  const std::string manifest_path = file("manifest.json"), inputs_path = file("inputs.txt");
  const std::string list = inputs_text(inputs);
  if (!fs::exists(manifest_path)) {
    // Every rank of a new run may get here at once: they all write the same bytes.
    write_text_atomically(inputs_path, list);
    write_text_atomically(manifest_path, manifest.to_json());
  }
  const auto existing = read_manifest();
  const auto diff = manifest.differences(existing);
  if (!diff.empty()) {
    throw std::runtime_error(
        fmt::format("{} holds a different run (this run vs the one there):\n{}use another --output "
                    "directory, or the same inputs and settings to resume that run",
                    path_, diff));
  }
  if (!fs::exists(inputs_path)) write_text_atomically(inputs_path, list);
  if (fingerprint_text(read_text(inputs_path)) != existing.inputs_hash) {
    throw std::runtime_error(
        fmt::format("{} does not match the manifest's inputs hash: the run directory was changed "
                    "by hand or by another run",
                    inputs_path));
  }
}

RunManifest RunDirectory::read_manifest() const {
  const auto path = file("manifest.json");
  if (!fs::exists(path)) {
    throw std::runtime_error(fmt::format(
        "{}: no manifest.json: not the --output directory of a run of rmt-classify or rmt-extract",
        path_));
  }
  return RunManifest::from_json(read_text(path), path);
}

std::vector<std::string> RunDirectory::read_inputs() const {
  const auto path = file("inputs.txt");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("{}: cannot open the run's input list", path));
  std::vector<std::string> inputs;
  for (std::string line; std::getline(in, line);) inputs.push_back(line);
  if (in.bad()) throw std::runtime_error(fmt::format("{}: cannot read the run's input list", path));
  return inputs;
}

std::string RunDirectory::chunk_path(ChunkFormat format, const Range& chunk) const {
  return (fs::path(path_) / "chunks" /
          fmt::format("{}-{}-{}{}", to_string(format), padded(chunk.begin), padded(chunk.end),
                      chunk_extension(format)))
      .string();
}

bool RunDirectory::has_chunk(ChunkFormat format, const Range& chunk) const {
  std::error_code ec;
  return fs::is_regular_file(chunk_path(format, chunk), ec);
}

std::vector<std::string> RunDirectory::chunk_files(ChunkFormat format) const {
  const std::string prefix = fmt::format("{}-", to_string(format)), ext = chunk_extension(format);
  std::vector<std::string> files;
  for (const auto& name : list_names(file("chunks"))) {
    if (name.rfind(prefix, 0) == 0 && name.size() > ext.size() &&
        name.compare(name.size() - ext.size(), ext.size(), ext) == 0) {
      files.push_back((fs::path(path_) / "chunks" / name).string());
    }
  }
  return files;
}

void RunDirectory::remove_temporaries_of(ChunkFormat format,
                                         const std::vector<Range>& chunks) const {
  std::vector<std::string> prefixes;
  for (const auto& c : chunks) {
    prefixes.push_back(
        fmt::format(".{}.tmp.", fs::path(chunk_path(format, c)).filename().string()));
  }
  std::sort(prefixes.begin(), prefixes.end());
  for (const auto& name : list_names(file("chunks"))) {
    if (name.empty() || name[0] != '.') continue;
    const auto dot = name.find(".tmp.");
    if (dot == std::string::npos) continue;
    if (std::binary_search(prefixes.begin(), prefixes.end(), name.substr(0, dot + 5))) {
      std::remove((fs::path(path_) / "chunks" / name).c_str());
    }
  }
}

void RunDirectory::mark_rank_finished(int64_t rank, const std::string& summary) const {
  write_text_atomically(file(fmt::format("ranks/rank-{}.json", padded(rank))),
                        fmt::format("{}\n", summary));
}

std::vector<Range> RunDirectory::missing_chunks(ChunkFormat format,
                                                const std::vector<Range>& chunks) const {
  std::vector<Range> missing;
  for (const auto& c : chunks) {
    if (!has_chunk(format, c)) missing.push_back(c);
  }
  return missing;
}

}  // namespace rmt::batch
