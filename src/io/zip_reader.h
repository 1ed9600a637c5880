#pragma once
// A read-only view of a zip archive in memory, enough for torch.save's archives: the central
// directory (zip64 included) and "stored" (uncompressed) entries. Every offset and size read from
// the file is checked against the buffer before it is used, and the entries' bytes (local header
// and data) must lie apart from each other, before the central directory: reading every entry
// reads each byte of the file at most once.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace rmt::io {

struct ZipEntry {
  std::string_view name;  // in the archive's bytes
  uint16_t flags = 0;
  uint16_t method = 0;  // 0: stored, 8: deflate, ...
  uint32_t crc = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  // just after the local header
};

struct ByteSpan {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

class ZipReader {
 public:
  // More entries than this are refused (torch.save writes one per storage, and a few more).
  static constexpr uint64_t kMaxEntries = uint64_t(1) << 18;

  // Reads the central directory and every local header; throws std::runtime_error describing
  // what is wrong. The bytes must outlive the reader.
  ZipReader(const uint8_t* data, size_t size);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(std::string_view name) const;
  // The bytes of a stored entry (checked against its local header, its CRC when verify_crc).
  ByteSpan contents(const ZipEntry& entry, bool verify_crc = true) const;

 private:
  const uint8_t* data_;
  size_t size_;
  uint64_t directory_offset_ = 0;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string_view, size_t> by_name_;
};

}  // namespace rmt::io
