#include "io/zip_reader.h"

#include <algorithm>

#include <fmt/format.h>

#include "io/bytes.h"

namespace rmt::io {

namespace {

constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kEndOfDirectory = 0x06054b50;
constexpr uint32_t kZip64EndOfDirectory = 0x06064b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr size_t kEndOfDirectorySize = 22;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kZip64EndOfDirectorySize = 56;
constexpr size_t kZip64LocatorSize = 20;

}  // namespace

ZipReader::ZipReader(const uint8_t* data, size_t size) : data_(data), size_(size) {
  if (size < kEndOfDirectorySize) {
    fail(fmt::format("not a zip archive: {} bytes is shorter than an end record", size));
  }
  // The end-of-central-directory record is the last 22 bytes plus a comment of up to 64 KiB:
  // search backwards for a signature whose comment length reaches exactly to the end.
  const size_t last = size - kEndOfDirectorySize;
  const size_t first = last > 0xFFFF ? last - 0xFFFF : 0;
  size_t eocd = SIZE_MAX;
  for (size_t p = last + 1; p-- > first;) {
    if (load_le<uint32_t>(data + p) != kEndOfDirectory) continue;
    const uint16_t comment = load_le<uint16_t>(data + p + 20);
    if (p + kEndOfDirectorySize + comment == size) {
      eocd = p;
      break;
    }
  }
  if (eocd == SIZE_MAX) {
    fail("zip archive: no end-of-central-directory record (the file is truncated or not a zip)");
  }
  const uint8_t* e = data + eocd;
  uint64_t disk = load_le<uint16_t>(e + 4);
  uint64_t directory_disk = load_le<uint16_t>(e + 6);
  uint64_t count = load_le<uint16_t>(e + 10);
  uint64_t directory_size = load_le<uint32_t>(e + 12);
  uint64_t directory_offset = load_le<uint32_t>(e + 16);
  uint64_t directory_end_limit = eocd;  // the directory must end before its end record

  const bool zip64 = count == 0xFFFF || directory_size == 0xFFFFFFFFu ||
                     directory_offset == 0xFFFFFFFFu || disk == 0xFFFF ||
                     directory_disk == 0xFFFF;
  if (eocd >= kZip64LocatorSize &&
      load_le<uint32_t>(data + eocd - kZip64LocatorSize) == kZip64Locator) {
    const uint8_t* loc = data + eocd - kZip64LocatorSize;
    const uint64_t record = load_le<uint64_t>(loc + 8);
    if (!range_ok(record, kZip64EndOfDirectorySize, eocd - kZip64LocatorSize)) {
      fail(fmt::format("zip archive: the zip64 end record offset {} is outside the file", record));
    }
    const uint8_t* z = data + record;
    if (load_le<uint32_t>(z) != kZip64EndOfDirectory) {
      fail(fmt::format("zip archive: no zip64 end record at offset {}", record));
    }
    disk = load_le<uint32_t>(z + 16);
    directory_disk = load_le<uint32_t>(z + 20);
    count = load_le<uint64_t>(z + 32);
    directory_size = load_le<uint64_t>(z + 40);
    directory_offset = load_le<uint64_t>(z + 48);
    directory_end_limit = record;
  } else if (zip64) {
    fail("zip archive: the end record needs a zip64 record, which is missing");
  }
  if (disk != 0 || directory_disk != 0) fail("zip archive: multi-disk archives are not supported");
  if (!range_ok(directory_offset, directory_size, directory_end_limit)) {
    fail(fmt::format("zip archive: the central directory (offset {}, {} bytes) is outside the file "
                     "of {} bytes",
                     directory_offset, directory_size, size));
  }
  if (count > directory_size / kCentralHeaderSize) {
    fail(fmt::format("zip archive: {} entries cannot fit in a central directory of {} bytes", count,
                     directory_size));
  }
  if (count > kMaxEntries) {
    fail(fmt::format("zip archive: {} entries, more than the {} a checkpoint reader accepts "
                     "(torch.save writes one per tensor storage)",
                     count, kMaxEntries));
  }
  directory_offset_ = directory_offset;

  entries_.reserve(count);
  uint64_t p = directory_offset;
  const uint64_t end = directory_offset + directory_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (!range_ok(p, kCentralHeaderSize, end) || load_le<uint32_t>(data + p) != kCentralHeader) {
      fail(fmt::format("zip archive: central directory entry {} is damaged", i));
    }
    const uint8_t* h = data + p;
    ZipEntry entry;
    entry.flags = load_le<uint16_t>(h + 8);
    entry.method = load_le<uint16_t>(h + 10);
    entry.crc = load_le<uint32_t>(h + 16);
    entry.compressed_size = load_le<uint32_t>(h + 20);
    entry.size = load_le<uint32_t>(h + 24);
    const uint16_t name_length = load_le<uint16_t>(h + 28);
    const uint16_t extra_length = load_le<uint16_t>(h + 30);
    const uint16_t comment_length = load_le<uint16_t>(h + 32);
    uint64_t entry_disk = load_le<uint16_t>(h + 34);
    entry.local_header_offset = load_le<uint32_t>(h + 42);
    const uint64_t variable = uint64_t(name_length) + extra_length + comment_length;
    if (!range_ok(p + kCentralHeaderSize, variable, end)) {
      fail(fmt::format("zip archive: central directory entry {} runs past the directory", i));
    }
    entry.name = std::string_view(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_length);

    // Zip64 extra field: 64-bit values for exactly the fields that hold 0xFFFFFFFF (0xFFFF).
    const bool need_size = entry.size == 0xFFFFFFFFu;
    const bool need_compressed = entry.compressed_size == 0xFFFFFFFFu;
    const bool need_offset = entry.local_header_offset == 0xFFFFFFFFu;
    const bool need_disk = entry_disk == 0xFFFF;
    if (need_size || need_compressed || need_offset || need_disk) {
      const uint8_t* x = h + kCentralHeaderSize + name_length;
      size_t left = extra_length;
      bool found = false;
      while (left >= 4) {
        const uint16_t id = load_le<uint16_t>(x);
        const uint16_t length = load_le<uint16_t>(x + 2);
        if (length > left - 4) {
          fail(fmt::format("zip archive: a damaged extra field in entry '{}'",
                           escape_and_cut(entry.name)));
        }
        if (id == 0x0001) {
          const uint8_t* f = x + 4;
          size_t have = length;
          auto take64 = [&](uint64_t* out) {
            if (have < 8) {
              fail(fmt::format("zip archive: the zip64 field of '{}' is too short",
                               escape_and_cut(entry.name)));
            }
            *out = load_le<uint64_t>(f);
            f += 8;
            have -= 8;
          };
          if (need_size) take64(&entry.size);
          if (need_compressed) take64(&entry.compressed_size);
          if (need_offset) take64(&entry.local_header_offset);
          if (need_disk) {
            if (have < 4) {
              fail(fmt::format("zip archive: the zip64 field of '{}' is too short",
                               escape_and_cut(entry.name)));
            }
            entry_disk = load_le<uint32_t>(f);
          }
          found = true;
          break;
        }
        x += 4 + length;
        left -= 4 + length;
      }
      if (!found) {
        fail(fmt::format("zip archive: entry '{}' needs a zip64 extra field, which is missing",
                         escape_and_cut(entry.name)));
      }
    }
    if (entry_disk != 0) fail("zip archive: multi-disk archives are not supported");
    if (!by_name_.emplace(entry.name, entries_.size()).second) {
      fail(fmt::format("zip archive: entry '{}' appears twice", escape_and_cut(entry.name)));
    }
    entries_.push_back(std::move(entry));
    p += kCentralHeaderSize + variable;
  }

  // Each entry's local header, and the span of bytes it owns: [local header, end of its data).
  struct Span {
    uint64_t begin, end;
    size_t entry;
  };
  std::vector<Span> spans;
  spans.reserve(entries_.size());
  for (size_t i = 0; i < entries_.size(); ++i) {
    ZipEntry& entry = entries_[i];
    const std::string what = fmt::format("zip entry '{}'", escape_and_cut(entry.name));
    const uint64_t lho = entry.local_header_offset;
    if (!range_ok(lho, kLocalHeaderSize, directory_offset_) ||
        load_le<uint32_t>(data_ + lho) != kLocalHeader) {
      fail(fmt::format("{}: no local header at offset {}", what, lho));
    }
    const uint16_t name_length = load_le<uint16_t>(data_ + lho + 26);
    const uint16_t extra_length = load_le<uint16_t>(data_ + lho + 28);
    const uint64_t name_at = lho + kLocalHeaderSize;
    if (!range_ok(name_at, uint64_t(name_length) + extra_length, directory_offset_)) {
      fail(fmt::format("{}: its local header runs past the central directory", what));
    }
    if (name_length != entry.name.size() ||
        std::memcmp(data_ + name_at, entry.name.data(), name_length) != 0) {
      fail(fmt::format("{}: its local header names another file", what));
    }
    entry.data_offset = name_at + name_length + extra_length;
    if (!range_ok(entry.data_offset, entry.compressed_size, directory_offset_)) {
      fail(fmt::format("{} ({} bytes at offset {}) runs past the end of the data; the file is "
                       "truncated or damaged",
                       what, entry.compressed_size, entry.data_offset));
    }
    spans.push_back({lho, entry.data_offset + entry.compressed_size, i});
  }
  // Entries that share bytes would let a small file be read as many times over as it has
  // entries; zip writers never produce them.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t k = 1; k < spans.size(); ++k) {
    if (spans[k].begin < spans[k - 1].end) {
      fail(fmt::format("zip archive: entries '{}' and '{}' overlap (bytes {} to {} belong to "
                       "both); each entry must have bytes of its own",
                       escape_and_cut(entries_[spans[k - 1].entry].name, 120),
                       escape_and_cut(entries_[spans[k].entry].name, 120), spans[k].begin,
                       std::min(spans[k].end, spans[k - 1].end)));
    }
  }
}

const ZipEntry* ZipReader::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

ByteSpan ZipReader::contents(const ZipEntry& entry, bool verify_crc) const {
  const std::string what = fmt::format("zip entry '{}'", escape_and_cut(entry.name));
  if (entry.flags & 0x1) fail(fmt::format("{} is encrypted", what));
  if (entry.method != 0) {
    fail(fmt::format("{} is compressed (method {}); torch.save writes only stored (uncompressed) "
                     "entries",
                     what, entry.method));
  }
  if (entry.compressed_size != entry.size) {
    fail(fmt::format("{} is stored but its compressed size {} differs from its size {}", what,
                     entry.compressed_size, entry.size));
  }
  // The local header and the range were checked when the directory was read.
  ByteSpan span{data_ + entry.data_offset, static_cast<size_t>(entry.size)};
  if (verify_crc && crc32(span.data, span.size) != entry.crc) {
    fail(fmt::format("{}: CRC-32 mismatch, the file is damaged", what));
  }
  return span;
}

}  // namespace rmt::io
