#include "rmt/batch/chunks.h"

#include <algorithm>
#include <fstream>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "rmt/io/checkpoint.h"

namespace rmt::batch {

using Json = nlohmann::ordered_json;

namespace {

// The indices must be exactly begin, ..., end - 1: a chunk holds each of its inputs once.
void check_complete(const Range& range, std::vector<int64_t> indices, const std::string& path) {
  std::sort(indices.begin(), indices.end());
  bool ok = static_cast<int64_t>(indices.size()) == range.size();
  for (size_t i = 0; ok && i < indices.size(); ++i) ok = indices[i] == range.begin + int64_t(i);
  if (!ok) {
    throw std::runtime_error(fmt::format(
        "{}: the chunk of inputs [{}, {}) has {} entries that are not each of its inputs once (an "
        "internal error)",
        path, range.begin, range.end, indices.size()));
  }
}

Json failure_json(const DecodeFailure& f) {
  return Json{{"index", f.input.index}, {"file", f.input.path}, {"error", f.error}};
}

}  // namespace

void ClassesChunk::add(const InputImage& input, const std::vector<Prediction>& top) {
  Json predictions = Json::array();
  for (const auto& p : top) {
    predictions.push_back({{"index", p.index}, {"label", p.label}, {"probability", p.probability}});
  }
  Json line{{"index", input.index}, {"file", input.path}, {"predictions", std::move(predictions)}};
  lines_.emplace_back(input.index, line.dump(-1, ' ', false, Json::error_handler_t::replace));
}

void ClassesChunk::add_failure(const DecodeFailure& failure) {
  lines_.emplace_back(failure.input.index,
                      failure_json(failure).dump(-1, ' ', false, Json::error_handler_t::replace));
}

void ClassesChunk::write(const std::string& path) const {
  auto lines = lines_;
  std::sort(lines.begin(), lines.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<int64_t> indices;
  for (const auto& l : lines) indices.push_back(l.first);
  check_complete(range_, indices, path);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (const auto& l : lines) out << l.second << '\n';
  out.close();
  if (!out) throw std::runtime_error(fmt::format("{}: cannot write", path));
}

void FeaturesChunk::add(const std::vector<InputImage>& images,
                        const std::vector<std::pair<std::string, at::Tensor>>& outputs) {
  if (images.empty()) return;
  if (names_.empty() && parts_.empty()) {
    for (const auto& [name, t] : outputs) names_.push_back(name);
    parts_.resize(names_.size());
  }
  if (outputs.size() != names_.size()) {
    throw std::logic_error("FeaturesChunk::add: the batches give different outputs");
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& [name, t] = outputs[i];
    if (name != names_[i] || t.dim() < 1 || t.size(0) != static_cast<int64_t>(images.size())) {
      throw std::logic_error(
          fmt::format("FeaturesChunk::add: output '{}' does not have one row per image", name));
    }
    parts_[i].push_back(t.detach().to(at::kCPU).contiguous());
  }
  images_.insert(images_.end(), images.begin(), images.end());
}

void FeaturesChunk::add_failure(const DecodeFailure& failure) { failures_.push_back(failure); }

void FeaturesChunk::write(const std::string& path) const {
  std::vector<int64_t> indices, rows;
  for (const auto& i : images_) rows.push_back(i.index);
  indices = rows;
  for (const auto& f : failures_) indices.push_back(f.input.index);
  check_complete(range_, indices, path);
  if (!std::is_sorted(rows.begin(), rows.end())) {
    throw std::logic_error("FeaturesChunk::write: the images were not added in input order");
  }

  StateDict tensors;
  tensors.insert("index", at::tensor(rows, at::kLong));
  for (size_t i = 0; i < names_.size(); ++i) tensors.insert(names_[i], at::cat(parts_[i]));
  Json files = Json::array(), failures = Json::array();
  for (const auto& i : images_) files.push_back(i.path);
  auto sorted_failures = failures_;
  std::sort(sorted_failures.begin(), sorted_failures.end(),
            [](const auto& a, const auto& b) { return a.input.index < b.input.index; });
  for (const auto& f : sorted_failures) failures.push_back(failure_json(f));
  const auto dump = [](const Json& j) {
    return j.dump(-1, ' ', false, Json::error_handler_t::replace);
  };
  save_safetensors(path, tensors,
                   {{"rmt.begin", fmt::to_string(range_.begin)},
                    {"rmt.end", fmt::to_string(range_.end)},
                    {"rmt.files", dump(files)},
                    {"rmt.failures", dump(failures)}});
}

}  // namespace rmt::batch
