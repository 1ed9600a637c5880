// torch.save's two formats: the zip archive (PyTorch >= 1.6) and the legacy stream of pickles.

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <unordered_map>
#include <unordered_set>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "io/bytes.h"
#include "io/checkpoint_reader.h"
#include "io/unpickler.h"
#include "io/zip_reader.h"

namespace rmt::io {

using pickle::Kind;
using pickle::Value;

namespace {

// Shared by both torch formats: one byte buffer per storage record, read once however many
// tensors view it, and typed views on it.
class TorchReader : public CheckpointReader {
 public:
  void load(const std::vector<const Value*>& wanted) override {
    for (const Value* v : wanted) {
      if (v->kind != Kind::Tensor) continue;
      auto& info = *v->tensor;
      if (info.data.defined()) continue;
      const auto& st = *info.storage->storage;
      const size_t r = record_of(st);
      const StorageRecord& record = pickled_.records[r];
      at::Tensor& buffer = buffers_[r];
      if (!buffer.defined()) buffer = read_record(record);
      // Bool data must be 0 or 1 (other bytes are undefined behaviour in torch's kernels),
      // whichever way the dtype came: a BoolStorage, or _rebuild_tensor_v3 over an untyped one.
      // The whole record is checked, once.
      if (info.dtype == at::kBool && !bool_checked_[r]) {
        check_bool_bytes(buffer, record);
        bool_checked_[r] = true;
      }
      int64_t offset = info.storage_offset;
      if (info.dtype == st.dtype) offset += st.view_offset;
      const int64_t elem = static_cast<int64_t>(element_size(info.dtype));
      // View the bytes as the tensor's dtype (whole elements only), then as the tensor.
      const int64_t usable = buffer.numel() / elem * elem;
      at::Tensor typed = buffer.narrow(0, 0, usable).view(info.dtype);
      info.data = typed.as_strided(info.sizes, info.strides, offset);
    }
  }

 protected:
  // The bytes of one record, exactly record.nbytes of them, in a new CPU uint8 tensor.
  virtual at::Tensor read_record(const StorageRecord& record) = 0;

  static at::Tensor copy_bytes(const uint8_t* p, size_t n) {
    at::Tensor t = at::empty({static_cast<int64_t>(n)}, at::kByte);
    if (n) std::memcpy(t.data_ptr<uint8_t>(), p, n);
    return t;
  }

  static void check_bool_bytes(const at::Tensor& buffer, const StorageRecord& record) {
    const uint8_t* p = buffer.data_ptr<uint8_t>();
    const size_t n = static_cast<size_t>(buffer.numel());
    for (size_t i = 0; i < n; ++i) {
      if (p[i] > 1) {
        fail(fmt::format("storage '{}' holds a bool tensor, but its byte {} is {}, neither 0 nor 1",
                         escape_and_cut(record.key), i, p[i]));
      }
    }
  }

  void adopt(PickleResult&& result, const char* format) {
    pickled_ = std::move(result);
    contents.format = format;
    contents.tree = pickled_.tree;
    contents.root = pickled_.tree->root();
    tensors = pickled_.tensors;
    buffers_.assign(pickled_.records.size(), at::Tensor());
    bool_checked_.assign(pickled_.records.size(), false);
  }

  PickleResult pickled_;

 private:
  // The record of a storage, found by its key once per storage value (a key can be long and
  // named by a million tensors).
  size_t record_of(const pickle::StorageInfo& st) {
    const auto cached = record_of_.find(&st);
    if (cached != record_of_.end()) return cached->second;
    const auto found = pickled_.record_index.find(st.key);
    if (found == pickled_.record_index.end()) {
      fail(fmt::format("storage '{}' is not declared", escape_and_cut(st.key)));  // cannot happen
    }
    record_of_.emplace(&st, found->second);
    return found->second;
  }

  std::vector<at::Tensor> buffers_;  // by record
  std::vector<bool> bool_checked_;   // by record
  std::unordered_map<const pickle::StorageInfo*, size_t> record_of_;
};

class TorchZipReader : public TorchReader {
 public:
  TorchZipReader(const uint8_t* data, size_t size, const pickle::Limits& limits)
      : zip_(data, size) {
    const ZipEntry* pkl = nullptr;
    std::vector<std::string> names;
    for (const ZipEntry& e : zip_.entries()) {
      const std::string_view n = e.name;
      const size_t slash = n.find('/');
      const bool top = n == "data.pkl" || (slash != std::string::npos &&
                                           n.compare(slash, std::string_view::npos, "/data.pkl") == 0);
      if (!top) continue;
      if (pkl) {
        fail(fmt::format("zip archive holds two data.pkl records ('{}', '{}')",
                         escape_and_cut(pkl->name), escape_and_cut(n)));
      }
      pkl = &e;
    }
    if (!pkl) {
      std::vector<std::string> listing;
      for (size_t i = 0; i < zip_.entries().size() && i < 8; ++i) {
        listing.push_back(escape_and_cut(zip_.entries()[i].name, 60));
      }
      if (zip_.entries().size() > 8) listing.emplace_back("...");
      if (listing.empty()) listing.emplace_back("none");
      fail(fmt::format("zip archive without a data.pkl record, so not a torch.save checkpoint "
                       "(entries: {})",
                       fmt::join(listing, ", ")));
    }
    prefix_ = std::string(pkl->name.substr(0, pkl->name.size() - std::strlen("data.pkl")));
    if (const ZipEntry* order = zip_.find(prefix_ + "byteorder")) {
      const ByteSpan s = zip_.contents(*order);
      const std::string_view value(reinterpret_cast<const char*>(s.data), s.size);
      if (value != "little") {
        fail(fmt::format("the checkpoint was written on a '{}'-endian machine; only little-endian "
                         "checkpoints are read",
                         escape_and_cut(value, 20)));
      }
    }
    const ByteSpan bytes = zip_.contents(*pkl);
    try {
      adopt(unpickle(bytes.data, bytes.size, limits), "torch.save zip");
    } catch (const std::exception& e) {
      fail(fmt::format("{}: {}", escape_and_cut(pkl->name), e.what()));
    }
  }

 private:
  at::Tensor read_record(const StorageRecord& record) override {
    const std::string name = prefix_ + "data/" + record.key;
    const ZipEntry* e = zip_.find(name);
    if (!e) {
      fail(fmt::format("the storage record '{}' is missing from the archive",
                       escape_and_cut(name)));
    }
    if (e->size != record.nbytes) {
      fail(fmt::format("the storage record '{}' holds {} bytes, but data.pkl declares {} elements "
                       "of {} ({} bytes)",
                       escape_and_cut(name), e->size, record.numel, dtype_name(record.dtype),
                       record.nbytes));
    }
    const ByteSpan s = zip_.contents(*e);
    return copy_bytes(s.data, s.size);
  }

  ZipReader zip_;
  std::string prefix_;
};

// The legacy format: pickles of the magic number, the protocol version and sys_info, the object
// pickle, the list of storage keys, then per storage an int64 element count and the raw bytes.
class TorchLegacyReader : public TorchReader {
 public:
  TorchLegacyReader(const uint8_t* data, size_t size, const pickle::Limits& limits)
      : data_(data), size_(size) {
    size_t pos = 0;
    // The object pickle and the key list stay alive together: they share one budget.
    pickle::Limits budget = limits;
    auto next = [&](const char* what) {
      try {
        PickleResult r = unpickle(data + pos, size - pos, budget);
        pos += r.end;
        budget.max_work -= std::min(budget.max_work, r.work);
        return r;
      } catch (const std::exception& e) {
        fail(fmt::format("legacy torch.save: the {} pickle: {}", what, e.what()));
      }
    };
    // 0x1950a86a20f9469cfc6c, as Python writes it: LONG1, 10 bytes, little-endian.
    static const uint8_t kMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    {
      PickleResult magic = next("magic number");
      const Value* m = magic.tree->root();
      if (m->kind != Kind::BigInt || m->text.size() != sizeof(kMagic) ||
          std::memcmp(m->text.data(), kMagic, sizeof(kMagic)) != 0) {
        fail(fmt::format("legacy torch.save: expected the magic number 0x1950a86a20f9469cfc6c, "
                         "found {}",
                         pickle::render(*m, {1, 4, 40})));
      }
    }
    {
      PickleResult version = next("protocol version");
      const Value* v = version.tree->root();
      if (v->kind != Kind::Int || v->integer != 1001) {
        fail(fmt::format("legacy torch.save: expected protocol version 1001, found {}",
                         pickle::render(*v, {1, 4, 40})));
      }
    }
    {
      PickleResult sys_info = next("sys_info");
      const Value* info = sys_info.tree->root();
      const Value* little = info->kind == Kind::Dict ? info->find("little_endian") : nullptr;
      if (little && little->kind == Kind::Bool && !little->boolean) {
        fail("legacy torch.save: the checkpoint was written on a big-endian machine");
      }
    }
    adopt(next("object"), "torch.save legacy");
    budget.max_memory -= std::min(budget.max_memory, pickled_.memory);
    PickleResult keys = next("storage key list");
    const Value* list = keys.tree->root();
    if (list->kind != Kind::List) {
      fail(fmt::format("legacy torch.save: the storage key list is a {}, not a list",
                       list->type_name()));
    }
    for (const Value* k : list->items) {
      if (k->kind != Kind::Str) fail("legacy torch.save: a storage key is not a string");
      const auto found = pickled_.record_index.find(k->text);
      if (found == pickled_.record_index.end()) {
        fail(fmt::format("legacy torch.save: storage '{}' has a data record but no tensor names it",
                         escape_and_cut(k->text)));
      }
      const StorageRecord& record = pickled_.records[found->second];
      if (!range_ok(pos, 8, size)) {
        fail(fmt::format("legacy torch.save: the file ends before the record of storage '{}' "
                         "(truncated)",
                         escape_and_cut(k->text)));
      }
      const int64_t numel = load_le<int64_t>(data + pos);
      pos += 8;
      if (numel != record.numel) {
        fail(fmt::format("legacy torch.save: the record of storage '{}' holds {} elements, but the "
                         "pickle declares {}",
                         escape_and_cut(k->text), numel, record.numel));
      }
      if (!range_ok(pos, record.nbytes, size)) {
        fail(fmt::format("legacy torch.save: the record of storage '{}' ({} bytes at offset {}) "
                         "runs past the end of the file (truncated)",
                         escape_and_cut(k->text), record.nbytes, pos));
      }
      if (!offsets_.emplace(k->text, pos).second) {
        fail(fmt::format("legacy torch.save: storage '{}' has two data records",
                         escape_and_cut(k->text)));
      }
      pos += static_cast<size_t>(record.nbytes);
    }
  }

 private:
  at::Tensor read_record(const StorageRecord& record) override {
    const auto it = offsets_.find(record.key);
    if (it == offsets_.end()) {
      fail(fmt::format("legacy torch.save: storage '{}' has no data record",
                       escape_and_cut(record.key)));
    }
    return copy_bytes(data_ + it->second, static_cast<size_t>(record.nbytes));
  }

  const uint8_t* data_;
  size_t size_;
  std::unordered_map<std::string, size_t> offsets_;
};

}  // namespace

std::unique_ptr<CheckpointReader> open_torch_zip(const uint8_t* data, size_t size,
                                                 const pickle::Limits& limits) {
  return std::make_unique<TorchZipReader>(data, size, limits);
}

std::unique_ptr<CheckpointReader> open_torch_legacy(const uint8_t* data, size_t size,
                                                    const pickle::Limits& limits) {
  return std::make_unique<TorchLegacyReader>(data, size, limits);
}

std::unique_ptr<CheckpointReader> open_checkpoint(const uint8_t* data, size_t size,
                                                  const pickle::Limits& limits) {
  if (size == 0) fail("the file is empty");
  if (size >= 4 && data[0] == 'P' && data[1] == 'K' &&
      ((data[2] == 3 && data[3] == 4) || (data[2] == 5 && data[3] == 6))) {
    return open_torch_zip(data, size, limits);
  }
  if (size >= 9 && data[8] == '{') return open_safetensors(data, size, limits);
  if (data[0] == 0x80) return open_torch_legacy(data, size, limits);
  if (size >= 8 && load_le<uint64_t>(data) <= size - 8 && load_le<uint64_t>(data) > 0) {
    return open_safetensors(data, size, limits);
  }
  if (size >= 262 && std::memcmp(data + 257, "ustar", 5) == 0) {
    fail("a tar-format torch.save checkpoint (PyTorch < 0.4) is not supported");
  }
  fail(fmt::format("not a checkpoint: expected a torch.save zip archive, a legacy torch.save file "
                   "or a safetensors file, but it starts with bytes {:02x}",
                   fmt::join(data, data + std::min<size_t>(size, 8), " ")));
}

MappedFile::MappedFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(fmt::format("cannot open: {}", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(fmt::format("cannot stat: {}", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
      data_ = static_cast<const uint8_t*>(p);
      mapped_ = true;
    } else {  // e.g. a file system without mmap: read it instead
      copy_.resize(size_);
      size_t done = 0;
      while (done < size_) {
        const ssize_t n = ::read(fd, copy_.data() + done, size_ - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          ::close(fd);
          fail(fmt::format("cannot read: {}", n < 0 ? std::strerror(errno) : "unexpected end"));
        }
        done += static_cast<size_t>(n);
      }
      data_ = copy_.data();
    }
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace rmt::io
