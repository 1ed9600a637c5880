// rmt::read_state_dict and friends: choosing the weights inside a checkpoint, cleaning their
// names, and describing a checkpoint's other contents.

#include <functional>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <c10/util/Exception.h>

#include "io/bytes.h"
#include "io/checkpoint_reader.h"
#include "rmt/checkpoint.h"

namespace rmt {

using pickle::Kind;
using pickle::Value;

namespace {

const char* const kAutoKeys[] = {"model", "state_dict", "model_ema", "state_dict_ema"};

std::string key_text(const Value& k) {
  if (k.kind == Kind::Str) return io::printable(k.text, 80);
  return pickle::render(k, {2, 4, 40});
}

// "a, b, c, ... (N more)"
std::string entry_list(const Value& dict, size_t max = 12) {
  std::string s;
  for (size_t i = 0; i < dict.entries.size(); ++i) {
    if (i == max) {
      s += ", ... (" + std::to_string(dict.entries.size() - i) + " more)";
      break;
    }
    s += (i ? ", " : "") + key_text(*dict.entries[i].first);
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
StateDict select(const Value* root, const WeightsSelection& selection,
                 const std::function<void(const std::vector<const Value*>&)>& load) {
  if (!is_mapping(root)) {
    io::fail("the checkpoint holds a " + (root ? root->type_name() : std::string("nothing")) +
             ", expected a dict (a state_dict or a training checkpoint with 'model', "
             "'state_dict', ...)");
  }
  const Value* chosen = nullptr;
  std::string where;
  const std::string& key = selection.weights_key;
  if (key == "auto") {
    for (const char* k : kAutoKeys) {
      if ((chosen = root->find(k))) {
        where = std::string("entry '") + k + "'";
        break;
      }
    }
    if (!chosen) {
      if (!is_state_dict(root)) {
        std::string why;
        for (const auto& [k, x] : root->entries) {
          if (k->kind != Kind::Str) {
            why = "its key " + key_text(*k) + " is not a string";
            break;
          }
          if (x->kind != Kind::Tensor) {
            why = "its entry '" + key_text(*k) + "' is a " + x->type_name();
            break;
          }
        }
        if (why.empty()) why = "it is empty";
        io::fail("no weights found: none of the entries model, state_dict, model_ema, "
                 "state_dict_ema is present, and the top-level dict is not a state_dict (" +
                 why + "); entries: " + entry_list(*root));
      }
      chosen = root;
      where = "the top-level dict";
    }
  } else if (key.empty()) {
    chosen = root;
    where = "the top-level dict";
  } else {
    chosen = root->find(key);
    if (!chosen) {
      io::fail("no entry '" + io::printable(key) + "'; entries: " + entry_list(*root));
    }
    where = "entry '" + io::printable(key) + "'";
  }

  if (!is_mapping(chosen)) {
    io::fail(where + " is a " + chosen->type_name() + ", not a state_dict (a dict of tensors)");
  }
  if (chosen->entries.empty()) io::fail(where + " holds no tensors");
  std::vector<std::string> names;
  std::vector<const Value*> values;
  names.reserve(chosen->entries.size());
  for (const auto& [k, x] : chosen->entries) {
    if (k->kind != Kind::Str) io::fail(where + ": the key " + key_text(*k) + " is not a string");
    if (x->kind != Kind::Tensor) {
      io::fail(where + ": '" + key_text(*k) + "' is a " + x->type_name() + ", not a tensor");
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
    io::fail("no key of " + where + " starts with '" + io::printable(prefix) + "'; keys: " +
             entry_list(*chosen, 6));
  }
  std::vector<const Value*> wanted;
  wanted.reserve(kept.size());
  for (size_t i : kept) wanted.push_back(values[i]);
  load(wanted);

  StateDict out;
  out.reserve(kept.size());
  for (size_t i : kept) {
    std::string name = names[i].substr(prefix.size());
    if (out.contains(name)) io::fail(where + ": key '" + io::printable(name) + "' appears twice");
    const at::Tensor& data = values[i]->tensor->data;
    if (!data.defined()) io::fail(where + ": tensor '" + io::printable(name) + "' has no data");
    out.insert(std::move(name), data);
  }
  return out;
}

// Runs f, turning any error into std::runtime_error("NAME: message").
template <typename F>
auto named(const std::string& name, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    throw std::runtime_error(name + ": " + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(name + ": out of memory while reading");
  } catch (const std::exception& e) {
    throw std::runtime_error(name + ": " + e.what());
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
                [&](const std::vector<const Value*>& t) { reader->load(t); });
}

// ---------------------------------------------------------------------------------------------
// describe_checkpoint

struct TensorCount {
  size_t tensors = 0;
  int64_t elements = 0;
  std::set<std::string> dtypes;
  bool partial = false;  // the work budget ran out: at least this many
};

// "what N tensors, M elements (float32, int64)"
std::string tensor_summary(const TensorCount& c, const char* what) {
  std::string s = std::string(what) + (c.partial ? "at least " : "") + std::to_string(c.tensors) +
                  " tensors, " + std::to_string(c.elements) + " elements";
  if (!c.dtypes.empty()) {
    s += " (";
    bool first = true;
    for (const auto& d : c.dtypes) {
      s += (first ? "" : ", ") + d;
      first = false;
    }
    s += ")";
  }
  return s;
}

// Walks are iterative, cached per value and share one budget of visited values, so a hostile
// tree (one huge list referenced from a million places, cycles) cannot make describing it slow.
class Describer {
 public:
  std::string out;

  void entry(const std::string& indent, const std::string& label, const Value* v, int level) {
    out += indent + label;
    if (state_dict(v)) {
      out += ": " + tensor_summary(count(v), "state_dict, ") + "\n";
      return;
    }
    if (v->kind == Kind::Object && v->state && v->state->kind == Kind::Dict && level < 2) {
      // argparse.Namespace and similar: one attribute per line
      out += ": " + io::printable(v->qualified_name()) + "\n";
      lines(indent + "  ", v->state, " = ");
      return;
    }
    const TensorCount& c = count(v);
    if (is_mapping(v) && level < 1 && (c.tensors > 0 || v->entries.size() > 4)) {
      out += ": " + v->type_name() + " of " + std::to_string(v->entries.size()) + " entries";
      if (c.tensors) out += " (" + tensor_summary(c, "holding ") + ")";
      out += "\n";
      size_t shown = 0;
      for (const auto& [k, x] : v->entries) {
        if (shown++ == 24) {
          out += indent + "  ... (" + std::to_string(v->entries.size() - 24) + " more)\n";
          break;
        }
        entry(indent + "  ", key_text(*k), x, level + 1);
      }
      return;
    }
    if (c.tensors > 0 && v->kind != Kind::Tensor) {
      out += ": " + v->type_name() + " (" + tensor_summary(c, "holding ") + ")\n";
      return;
    }
    out += ": " + pickle::render(*v, {4, 16, 200, 2000}) + "\n";
  }

  void lines(const std::string& indent, const Value* dict, const char* separator) {
    size_t shown = 0;
    for (const auto& [k, x] : dict->entries) {
      if (shown++ == 200) {
        out += indent + "... (" + std::to_string(dict->entries.size() - 200) + " more)\n";
        break;
      }
      out += indent + key_text(*k) + separator + pickle::render(*x, {3, 12, 200, 2000}) + "\n";
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
        int64_t n = 1;
        for (int64_t s : x->tensor->sizes) n *= s;  // checked not to overflow when read
        if (!io::add_ok(c.elements, n, &c.elements)) c.elements = INT64_MAX;
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
  size_t budget_ = 4000000;
  std::unordered_map<const Value*, TensorCount> counts_;
  std::unordered_map<const Value*, bool> state_dicts_;
};

}  // namespace

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

StateDict select_state_dict(const CheckpointContents& contents, const WeightsSelection& selection) {
  return named(contents.path, [&] {
    return select(contents.root, selection, [](const std::vector<const Value*>&) {});
  });
}

std::string describe_checkpoint(const CheckpointContents& contents) {
  Describer d;
  d.out = "format: " + contents.format + "\n";
  for (const auto& [k, v] : contents.metadata) {
    d.out += "metadata " + io::printable(k, 80) + ": " + io::printable(v, 2000) + "\n";
  }
  const Value* root = contents.root;
  if (!root) return d.out;
  if (d.state_dict(root)) {
    d.out += tensor_summary(d.count(root), "state_dict, ") + "\n";
  } else if (is_mapping(root)) {
    size_t shown = 0;
    for (const auto& [k, v] : root->entries) {
      if (shown++ == 200) {
        d.out += "... (" + std::to_string(root->entries.size() - 200) + " more entries)\n";
        break;
      }
      d.entry("", key_text(*k), v, 0);
    }
  } else {
    d.entry("", "object", root, 0);
  }
  return d.out;
}

}  // namespace rmt
