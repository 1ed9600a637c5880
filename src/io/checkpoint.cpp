// rmt::read_state_dict and friends: choosing the weights inside a checkpoint, cleaning their
// names, and describing a checkpoint's other contents.

#include <functional>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "io/bytes.h"
#include "io/checkpoint_reader.h"
#include "rmt/io/checkpoint.h"

namespace rmt {

using pickle::Kind;
using pickle::Value;

namespace {

std::string key_text(const Value& k) {
  if (k.kind == Kind::Str) return io::escape_and_cut(k.text, 80);
  return pickle::render(k, {2, 4, 40, 120});
}

// "a, b, c, ... (N more)"
std::string entry_list(const Value& dict, size_t max = 8) {
  std::string s;
  auto to = std::back_inserter(s);
  for (size_t i = 0; i < dict.entries.size(); ++i) {
    if (i == max) {
      fmt::format_to(to, ", ... ({} more)", dict.entries.size() - i);
      break;
    }
    fmt::format_to(to, "{}{}", i ? ", " : "", key_text(*dict.entries[i].first));
  }
  return s.empty() ? "none" : s;
}

bool is_mapping(const Value* v) {
  return v && (v->kind == Kind::Dict || (v->kind == Kind::Object && !v->entries.empty()));
}

bool is_state_dict(const Value* v) {
  if (!is_mapping(v) || v->entries.empty()) return false;
  for (const auto& [k, x] : v->entries) {
    if (k->kind != Kind::Str || x->kind != Kind::Tensor) return false;
  }
  return true;
}

// Chooses the weights and names them; reads their data through `load`.
SelectedWeights select(const Value* root, const WeightsSelection& selection,
                       const std::function<void(const std::vector<const Value*>&)>& load) {
  if (!is_mapping(root)) {
    io::fail(fmt::format("the checkpoint holds a {}, expected a dict (a state_dict or a training "
                         "checkpoint with 'model', 'state_dict', ...)",
                         root ? root->type_name() : std::string("nothing")));
  }
  SelectedWeights selected;
  const Value* chosen = nullptr;
  std::string where;
  const std::string& key = selection.weights_key;
  if (key == "auto") {
    selected.automatic = true;
    for (const auto& k : automatic_weights_keys()) {
      if ((chosen = root->find(k))) {
        selected.entry = k;
        where = fmt::format("entry '{}'", k);
        break;
      }
    }
    if (!chosen) {
      if (!is_state_dict(root)) {
        std::string why;
        for (const auto& [k, x] : root->entries) {
          if (k->kind != Kind::Str) {
            why = fmt::format("its key {} is not a string", key_text(*k));
            break;
          }
          if (x->kind != Kind::Tensor) {
            why = fmt::format("its entry '{}' is a {}", key_text(*k), x->type_name());
            break;
          }
        }
        if (why.empty()) why = "it is empty";
        io::fail(fmt::format("no weights found: none of the entries {} is present, and the "
                             "top-level dict is not a state_dict ({}); entries: {}",
                             fmt::join(automatic_weights_keys(), ", "), why, entry_list(*root)));
      }
      chosen = root;
      where = "the top-level dict";
    }
  } else if (key.empty()) {
    chosen = root;
    where = "the top-level dict";
  } else {
    chosen = root->find(key);
    selected.entry = key;
    if (!chosen) {
      io::fail(fmt::format("no entry '{}'; entries: {}", io::escape_and_cut(key),
                           entry_list(*root)));
    }
    where = fmt::format("entry '{}'", io::escape_and_cut(key));
  }

  if (!is_mapping(chosen)) {
    io::fail(fmt::format("{} is a {}, not a state_dict (a dict of tensors)", where,
                         chosen->type_name()));
  }
  if (chosen->entries.empty()) io::fail(fmt::format("{} holds no tensors", where));
  std::vector<std::string> names;
  std::vector<const Value*> values;
  names.reserve(chosen->entries.size());
  for (const auto& [k, x] : chosen->entries) {
    if (k->kind != Kind::Str) {
      io::fail(fmt::format("{}: the key {} is not a string", where, key_text(*k)));
    }
    if (x->kind != Kind::Tensor) {
      io::fail(fmt::format("{}: '{}' is a {}, not a tensor", where, key_text(*k), x->type_name()));
    }
    names.push_back(k->text);
    values.push_back(x);
  }

  // DistributedDataParallel's prefix, when every key has it.
  const std::string module = "module.";
  if (selection.strip_module_prefix) {
    bool all = true;
    for (const auto& n : names) all = all && n.compare(0, module.size(), module) == 0;
    if (all) {
      for (auto& n : names) n.erase(0, module.size());
    }
  }
  std::vector<size_t> kept;
  const std::string& prefix = selection.key_prefix;
  for (size_t i = 0; i < names.size(); ++i) {
    if (prefix.empty() || names[i].compare(0, prefix.size(), prefix) == 0) kept.push_back(i);
  }
  if (kept.empty()) {
    io::fail(fmt::format("no key of {} starts with '{}'; keys: {}", where,
                         io::escape_and_cut(prefix), entry_list(*chosen, 6)));
  }
  std::vector<const Value*> wanted;
  wanted.reserve(kept.size());
  for (size_t i : kept) wanted.push_back(values[i]);
  load(wanted);

  StateDict& out = selected.weights;
  out.reserve(kept.size());
  for (size_t i : kept) {
    std::string name = names[i].substr(prefix.size());
    if (out.contains(name)) {
      io::fail(fmt::format("{}: key '{}' appears twice", where, io::escape_and_cut(name)));
    }
    const at::Tensor& data = values[i]->tensor->data;
    if (!data.defined()) {
      io::fail(fmt::format("{}: tensor '{}' has no data", where, io::escape_and_cut(name)));
    }
    out.insert(std::move(name), data);
  }
  return selected;
}

// Runs f, turning any error into std::runtime_error("NAME: message"), under 1 KB (the parts
// from the file were escaped and cut where they were put in; this is the last guard).
template <typename F>
auto named(const std::string& name, F&& f) -> decltype(f()) {
  const auto message = [&](const std::string& what) {
    return cut_message(fmt::format("{}: {}", io::escape_and_cut(name, 300), what));
  };
  try {
    return f();
  } catch (const c10::Error& e) {
    throw std::runtime_error(message(e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(message("out of memory while reading"));
  } catch (const std::exception& e) {
    throw std::runtime_error(message(e.what()));
  }
}

CheckpointContents read_all(const uint8_t* data, size_t size, const std::string& name) {
  auto reader = io::open_checkpoint(data, size);
  reader->load(reader->tensors);
  CheckpointContents c = std::move(reader->contents);
  c.path = name;
  return c;
}

StateDict read_weights(const uint8_t* data, size_t size, const WeightsSelection& selection) {
  auto reader = io::open_checkpoint(data, size);
  return select(reader->contents.root, selection,
                [&](const std::vector<const Value*>& t) { reader->load(t); })
      .weights;
}

// ---------------------------------------------------------------------------------------------
// describe_checkpoint

// The description stops here, with a line saying so.
constexpr size_t kMaxDescription = size_t(256) << 10;

struct TensorCount {
  size_t tensors = 0;
  CountSum elements;
  std::set<std::string> dtypes;
  bool partial = false;  // the work budget ran out: at least this many
};

// "what N tensors, M elements (float32, int64)"
std::string tensor_summary(const TensorCount& c, const char* what) {
  const bool at_least = c.partial || c.elements.saturated();
  std::string s = fmt::format("{}{}{} tensors, {} elements", what, at_least ? "at least " : "",
                              c.tensors, c.elements.value());
  if (!c.dtypes.empty()) fmt::format_to(std::back_inserter(s), " ({})", fmt::join(c.dtypes, ", "));
  return s;
}

bool container(const Value* v) {
  switch (v->kind) {
    case Kind::List: case Kind::Tuple: case Kind::Dict: case Kind::Set: case Kind::FrozenSet:
    case Kind::Object:
      return true;
    default:
      return false;
  }
}

// Walks are iterative, cached per value and share one budget of visited values; every container
// is described once (a later reference says where it was shown) and the whole text stops at
// kMaxDescription bytes with a line saying what was left out. So a hostile tree (one object
// referenced from a million places, cycles) gives a description as long as what the file holds,
// never longer than the limit.
class Describer {
 public:
  Describer() : session_(kMaxDescription) {}

  std::string out;

  bool full() const { return out.size() >= kMaxDescription; }

  // Appends fmt's text to out.
  template <typename... Args>
  void put(fmt::format_string<Args...> format, Args&&... args) {
    fmt::format_to(std::back_inserter(out), format, std::forward<Args>(args)...);
  }

  void entry(const std::string& indent, const std::string& label, const std::string& where,
             const Value* v, int level) {
    put("{}{}", indent, label);
    if (container(v)) {
      const std::string seen = session_.reference(v);
      if (!seen.empty()) {
        put(": {} {}\n", v->type_name(), seen);
        return;
      }
    }
    if (state_dict(v)) {
      put(": {}\n", tensor_summary(count(v), "state_dict, "));
      session_.mark_shown(v, where);
      return;
    }
    if (v->kind == Kind::Object && v->state && v->state->kind == Kind::Dict && level < 2) {
      // argparse.Namespace and similar: one attribute per line
      put(": {}\n", v->shown_name());
      session_.mark_shown(v, where);
      lines(indent + "  ", v->state, where);
      return;
    }
    const TensorCount& c = count(v);
    if (is_mapping(v) && level < 1 && (c.tensors > 0 || v->entries.size() > 4)) {
      put(": {} of {} entries", v->type_name(), v->entries.size());
      if (c.tensors) put(" ({})", tensor_summary(c, "holding "));
      out += "\n";
      session_.mark_shown(v, where);
      size_t shown = 0;
      for (const auto& [k, x] : v->entries) {
        if (shown == 24 || full()) {
          put("{}  ... ({} more)\n", indent, v->entries.size() - shown);
          break;
        }
        ++shown;
        const std::string key = key_text(*k);
        entry(indent + "  ", key, fmt::format("{} > {}", where, key), x, level + 1);
      }
      return;
    }
    if (c.tensors > 0 && v->kind != Kind::Tensor) {
      put(": {} ({})\n", v->type_name(), tensor_summary(c, "holding "));
      session_.mark_shown(v, where);
      return;
    }
    put(": {}\n", session_.render(*v, where, {4, 16, 200, 2000}));
  }

  void lines(const std::string& indent, const Value* dict, const std::string& where) {
    size_t shown = 0;
    for (const auto& [k, x] : dict->entries) {
      if (shown == 200 || full()) {
        put("{}... ({} more)\n", indent, dict->entries.size() - shown);
        break;
      }
      ++shown;
      const std::string key = key_text(*k);
      put("{}{} = {}\n", indent, key,
          session_.render(*x, fmt::format("{}.{}", where, key), {3, 12, 200, 2000}));
    }
  }

  bool state_dict(const Value* v) {
    if (!is_mapping(v)) return false;
    const auto found = state_dicts_.find(v);
    if (found != state_dicts_.end()) return found->second;
    const bool yes = is_state_dict(v);
    state_dicts_.emplace(v, yes);
    return yes;
  }

  const TensorCount& count(const Value* v) {
    const auto found = counts_.find(v);
    if (found != counts_.end()) return found->second;
    TensorCount c;
    std::vector<const Value*> todo{v};
    std::unordered_set<const Value*> seen;
    while (!todo.empty()) {
      const Value* x = todo.back();
      todo.pop_back();
      if (!x || !seen.insert(x).second) continue;
      if (budget_ == 0) {
        c.partial = true;
        break;
      }
      --budget_;
      if (x->kind == Kind::Tensor) {
        ++c.tensors;
        int64_t n = 0;
        if (!io::element_count(x->tensor->sizes, &n)) n = INT64_MAX;  // checked when read
        c.elements.add(n);
        c.dtypes.insert(io::dtype_name(x->tensor->dtype));
        continue;
      }
      for (const Value* i : x->items) todo.push_back(i);
      for (const auto& [k, e] : x->entries) {
        todo.push_back(k);
        todo.push_back(e);
      }
      todo.push_back(x->args);
      todo.push_back(x->kwargs);
      todo.push_back(x->state);
    }
    return counts_.emplace(v, std::move(c)).first->second;
  }

 private:
  size_t budget_ = 1000000;  // values visited by count(), all calls together
  pickle::RenderSession session_;
  std::unordered_map<const Value*, TensorCount> counts_;
  std::unordered_map<const Value*, bool> state_dicts_;
};

}  // namespace

const std::vector<std::string>& automatic_weights_keys() {
  static const std::vector<std::string> keys{"model", "state_dict", "model_ema", "state_dict_ema"};
  return keys;
}

StateDict read_state_dict(const std::string& path, const WeightsSelection& selection) {
  return named(path, [&] {
    io::MappedFile file(path);
    return read_weights(file.data(), file.size(), selection);
  });
}

StateDict read_state_dict_from_memory(const void* data, size_t size, const std::string& name,
                                      const WeightsSelection& selection) {
  return named(name, [&] {
    return read_weights(static_cast<const uint8_t*>(data), size, selection);
  });
}

CheckpointContents read_checkpoint(const std::string& path) {
  return named(path, [&] {
    io::MappedFile file(path);
    return read_all(file.data(), file.size(), path);
  });
}

CheckpointContents read_checkpoint_from_memory(const void* data, size_t size,
                                               const std::string& name) {
  return named(name, [&] { return read_all(static_cast<const uint8_t*>(data), size, name); });
}

SelectedWeights select_weights(const CheckpointContents& contents,
                               const WeightsSelection& selection) {
  return named(contents.path, [&] {
    return select(contents.root, selection, [](const std::vector<const Value*>&) {});
  });
}

StateDict select_state_dict(const CheckpointContents& contents, const WeightsSelection& selection) {
  return select_weights(contents, selection).weights;
}

std::string describe_checkpoint(const CheckpointContents& contents) {
  Describer d;
  d.put("format: {}\n", contents.format);
  size_t shown = 0;
  for (const auto& [k, v] : contents.metadata) {
    if (shown == 200 || d.full()) {
      d.put("... ({} more metadata entries)\n", contents.metadata.size() - shown);
      break;
    }
    ++shown;
    d.put("metadata {}: {}\n", io::escape_and_cut(k, 80), io::escape_and_cut(v, 2000));
  }
  const Value* root = contents.root;
  if (!root) return d.out;
  if (d.state_dict(root)) {
    d.put("{}\n", tensor_summary(d.count(root), "state_dict, "));
  } else if (is_mapping(root)) {
    shown = 0;
    for (const auto& [k, v] : root->entries) {
      if (shown == 200 || d.full()) {
        d.put("... ({} more entries", root->entries.size() - shown);
        if (d.full()) d.put(": the description stops at {} bytes", kMaxDescription);
        d.out += ")\n";
        break;
      }
      ++shown;
      const std::string key = key_text(*k);
      d.entry("", key, key, v, 0);
    }
  } else {
    d.entry("", "object", "the object", root, 0);
  }
  return d.out;
}

}  // namespace rmt
