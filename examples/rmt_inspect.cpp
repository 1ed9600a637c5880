// rmt-inspect: what a checkpoint holds (its entries, the weights' keys with shape and dtype, the
// parameter count, metadata such as the epoch or the training arguments), without building a model
// and without executing anything from the file. Its output grows with what the file really holds
// (a value referenced many times is shown once, long listings end with a count of what was left
// out) and everything taken from the file is escaped.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "model_flags.h"
#include "rmt/io/checkpoint.h"
#include "rmt/io/pickle.h"
#include "rmt/io/untrusted.h"
#include "models/grouping.h"  // the library's private helper (src/): one copy
#include "tool_common.h"

namespace {

using rmt::pickle::Kind;
using rmt::pickle::Value;

// Names from a file may hold anything (control bytes, megabytes): escaped and cut.
std::string printable(const std::string& text) { return rmt::escape_and_cut(text, 200); }

// The widest name column: longer names push their line's shape to the right, not every line's.
constexpr size_t kNameColumn = 60;
// Keys listed one per line in the text output; the rest are counted (--json lists them all).
constexpr size_t kMaxListedKeys = 10000;
// Top-level entries in --json's "entries".
constexpr size_t kMaxJsonEntries = 10000;

// Element counts: a sum over many tensors (a shared one counted at every name) can pass 2^63.
using Count = unsigned __int128;

std::string decimal(Count n) { return fmt::format("{}", n); }

nlohmann::json count_json(Count n) {
  if (n <= static_cast<Count>(INT64_MAX)) return static_cast<int64_t>(n);
  return decimal(n);  // too large for a JSON integer that every reader takes
}

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

std::string shape_text(at::IntArrayRef sizes) { return fmt::format("[{}]", fmt::join(sizes, ", ")); }

// 1234567 -> "1,234,567"
std::string grouped(Count n) { return fmt::format(rmt::detail::grouping(), "{:L}", n); }

bool is_mapping(const Value* v) {
  return v && (v->kind == Kind::Dict || (v->kind == Kind::Object && !v->entries.empty()));
}

// Where the weights were taken from, in words.
std::string weights_source(const rmt::SelectedWeights& s) {
  return fmt::format("{}{}",
                     s.entry.empty() ? std::string("the top-level dict")
                                     : fmt::format("entry '{}'", printable(s.entry)),
                     s.automatic ? " (auto)" : "");
}

struct Totals {
  int64_t tensors = 0;
  Count elements = 0, floating = 0;
  std::map<std::string, Count> by_dtype;  // elements per dtype
};

Totals totals_of(const rmt::StateDict& weights) {
  Totals t;
  for (const auto& item : weights) {
    const at::Tensor& x = item.value();
    const auto n = static_cast<Count>(x.numel());
    ++t.tensors;
    t.elements += n;
    if (at::isFloatingType(x.scalar_type())) t.floating += n;
    t.by_dtype[dtype_name(x.scalar_type())] += n;
  }
  return t;
}

std::string totals_text(const Totals& t) {
  std::string s = fmt::format("{} tensors, {} parameters (floating-point elements)", t.tensors,
                              grouped(t.floating));
  if (t.elements != t.floating) s += fmt::format(", {} elements in all", grouped(t.elements));
  std::vector<std::string> by_dtype;
  for (const auto& [d, n] : t.by_dtype) by_dtype.push_back(fmt::format("{} {}", d, grouped(n)));
  return fmt::format("{}; by dtype: {}", s, fmt::join(by_dtype, ", "));
}

// The top-level entries, values rendered in one session: a value shared by several entries is
// shown at the first and referred to by the others.
nlohmann::json json_entries(const rmt::CheckpointContents& c, size_t* not_shown) {
  nlohmann::json entries = nlohmann::json::array();
  *not_shown = 0;
  if (!is_mapping(c.root)) return entries;
  rmt::pickle::RenderSession session;
  size_t shown = 0;
  for (const auto& [k, v] : c.root->entries) {
    if (shown == kMaxJsonEntries) {
      *not_shown = c.root->entries.size() - shown;
      break;
    }
    ++shown;
    nlohmann::json e;
    const std::string key = k->kind == Kind::Str ? k->text : rmt::pickle::render(*k, {2, 4, 40, 120});
    e["key"] = key;
    e["type"] = v->type_name();
    switch (v->kind) {
      case Kind::None: e["value"] = nullptr; break;
      case Kind::Bool: e["value"] = v->boolean; break;
      case Kind::Int: e["value"] = v->integer; break;
      case Kind::Float: e["value"] = v->real; break;
      case Kind::Str:
        e["value"] = v->text.size() <= 4000 ? v->text : rmt::escape_and_cut(v->text, 4000);
        break;
      default: e["value"] = session.render(*v, printable(key), {3, 12, 200, 4000});
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

int run(int argc, char** argv) {
  CLI::App app{"Lists what a checkpoint (torch.save .pth or safetensors) holds, without building "
               "a model: its entries and metadata, then the weights read_state_dict would take, "
               "one key per line with shape and dtype, and the parameter count."};
  std::string path;
  bool json = false, no_keys = false;
  app.add_option("file", path, "the checkpoint")->required();
  rmt::tools::SelectionFlags select;
  rmt::tools::add_selection_flags(app, select, /*module_prefix_flag=*/true);
  app.add_flag("--no-keys", no_keys, "only the entries and totals, not one line per tensor");
  app.add_flag("--json", json, "machine-readable output");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // With a selection given, only that state_dict is shown (and failing to find it is an error).
  const bool explicit_selection =
      select.weights_key_opt->count() > 0 || select.key_prefix_opt->count() > 0;

  const rmt::CheckpointContents contents = rmt::read_checkpoint(path);
  rmt::SelectedWeights selected;
  std::string no_weights;  // why there are none (auto selection on a file without weights)
  try {
    selected = rmt::select_weights(contents, select.selection());
  } catch (const std::exception& e) {
    if (explicit_selection) throw;
    no_weights = e.what();
  }
  const rmt::StateDict& weights = selected.weights;
  const std::string source =
      fmt::format("{}{}", weights_source(selected),
                  select.key_prefix.empty()
                      ? std::string()
                      : fmt::format(", keys starting with '{}'", printable(select.key_prefix)));
  const Totals totals = totals_of(weights);

  if (json) {
    nlohmann::json j;
    j["file"] = path;
    j["format"] = contents.format;
    j["metadata"] = contents.metadata;
    if (!explicit_selection) {
      size_t not_shown = 0;
      j["entries"] = json_entries(contents, &not_shown);
      if (not_shown) j["entries_not_shown"] = not_shown;
    }
    nlohmann::json w;
    if (no_weights.empty()) {
      w["source"] = source;
      w["tensors"] = totals.tensors;
      w["parameters"] = count_json(totals.floating);
      w["elements"] = count_json(totals.elements);
      nlohmann::json by_dtype = nlohmann::json::object();
      for (const auto& [d, n] : totals.by_dtype) by_dtype[d] = count_json(n);
      w["elements_by_dtype"] = std::move(by_dtype);
      if (!no_keys) {
        nlohmann::json keys = nlohmann::json::array();
        for (const auto& item : weights) {
          keys.push_back({{"name", item.key()},
                          {"shape", item.value().sizes().vec()},
                          {"dtype", dtype_name(item.value().scalar_type())}});
        }
        w["keys"] = std::move(keys);
      }
    } else {
      w["error"] = no_weights;
    }
    j["weights"] = std::move(w);
    if (!explicit_selection) j["description"] = rmt::describe_checkpoint(contents);
    fmt::print("{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    return 0;
  }

  fmt::memory_buffer out;
  const auto line = [&out](auto&&... args) { fmt::format_to(std::back_inserter(out), args...); };
  line("file: {}\n", rmt::escape_and_cut(path, 4096));
  if (explicit_selection) {
    line("format: {}\n", contents.format);
  } else {
    line("{}", rmt::describe_checkpoint(contents));
  }
  if (!no_weights.empty()) {
    line("weights: none found ({})\n", no_weights);
    fmt::print("{}", fmt::string_view(out.data(), out.size()));
    return 0;
  }
  line("weights: {}: {} tensors\n", source, totals.tensors);
  if (!no_keys) {
    size_t width = 0;
    for (const auto& item : weights) {
      width = std::max(width, std::min(kNameColumn, printable(item.key()).size()));
    }
    size_t listed = 0;
    for (const auto& item : weights) {
      if (listed == kMaxListedKeys) {
        line("  ... ({} more tensors not listed; --json lists every key)\n", weights.size() - listed);
        break;
      }
      ++listed;
      const std::string name = printable(item.key());
      const std::string shape = shape_text(item.value().sizes());
      // Padding counted in bytes (fmt's widths count code points).
      line("  {}{:{}}{}{:{}}{}\n", name, "", name.size() < width ? width - name.size() + 2 : 2,
           shape, "", shape.size() < 18 ? 20 - shape.size() : 2,
           dtype_name(item.value().scalar_type()));
    }
  }
  line("total: {}\n", totals_text(totals));
  fmt::print("{}", fmt::string_view(out.data(), out.size()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return rmt::tools::run_tool("rmt-inspect", [&] { return run(argc, argv); });
}
