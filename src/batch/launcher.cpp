#include "rmt/batch/launcher.h"

#include <cstdlib>
#include <stdexcept>

#include <fmt/format.h>

#include "runtime/whole_integer.h"

namespace rmt::batch {

namespace {

// A non-negative decimal integer, nothing else; `what` names the flag or variable for the message.
int64_t parse_count(const std::string& text, const std::string& what) {
  const auto bad = [&] {
    return std::invalid_argument(fmt::format("{}: expected a non-negative integer, found '{}'",
                                             what, text.substr(0, 40)));
  };
  const auto value = runtime::whole_integer(text);
  if (!value || *value < 0) throw bad();
  return *value;
}

std::optional<int64_t> env_count(const Environment& env, const std::string& name) {
  const auto value = env(name);
  if (!value) return std::nullopt;
  return parse_count(*value, fmt::format("the environment variable {}", name));
}

int64_t require(const Environment& env, const std::string& name, const std::string& because) {
  const auto value = env_count(env, name);
  if (!value) throw std::invalid_argument(fmt::format("{} but {} is not set", because, name));
  return *value;
}

}  // namespace

std::string to_string(Launcher launcher) {
  switch (launcher) {
    case Launcher::Single:
      return "single process";
    case Launcher::Flags:
      return "--rank/--world-size";
    case Launcher::Torchrun:
      return "torchrun";
    case Launcher::Slurm:
      return "Slurm";
    case Launcher::IndexedJob:
      return "Kubernetes Indexed Job";
  }
  return "?";
}

std::string RankInfo::describe() const {
  return fmt::format("rank {}/{} ({})", rank, world_size, to_string(launcher));
}

Environment process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (!value) return std::nullopt;
    return std::string(value);
  };
}

RankInfo detect_rank(std::optional<int64_t> rank, std::optional<int64_t> world_size,
                     const Environment& env) {
  RankInfo info;
  // A --world-size given next to a launcher's own count must agree with it.
  const auto agree = [&](const std::string& source) {
    if (world_size && *world_size != info.world_size) {
      throw std::invalid_argument(fmt::format("--world-size {} disagrees with {} = {}",
                                              *world_size, source, info.world_size));
    }
  };
  if (rank) {
    if (!world_size) throw std::invalid_argument("--rank needs --world-size");
    info.launcher = Launcher::Flags;
    info.rank = *rank;
    info.world_size = *world_size;
    info.local_rank =
        env_count(env, "LOCAL_RANK").value_or(env_count(env, "SLURM_LOCALID").value_or(0));
  } else if (env("RANK")) {
    info.launcher = Launcher::Torchrun;
    info.rank = *env_count(env, "RANK");
    info.world_size = require(env, "WORLD_SIZE", "RANK is set (torchrun)");
    info.local_rank = env_count(env, "LOCAL_RANK").value_or(0);
    agree("WORLD_SIZE");
  } else if (env("SLURM_PROCID") && env("SLURM_STEP_NUM_TASKS")) {
    info.launcher = Launcher::Slurm;
    info.rank = *env_count(env, "SLURM_PROCID");
    info.world_size = *env_count(env, "SLURM_STEP_NUM_TASKS");
    info.local_rank = env_count(env, "SLURM_LOCALID").value_or(0);
    agree("SLURM_STEP_NUM_TASKS");
  } else if (env("JOB_COMPLETION_INDEX")) {
    info.launcher = Launcher::IndexedJob;
    info.rank = *env_count(env, "JOB_COMPLETION_INDEX");
    if (world_size) {
      info.world_size = *world_size;
    } else if (const auto n = env_count(env, kWorldSizeVariable)) {
      info.world_size = *n;
    } else {
      throw std::invalid_argument(fmt::format(
          "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job), but the job's completions count "
          "is not known: pass --world-size N or set {} to spec.completions",
          kWorldSizeVariable));
    }
  } else if (world_size && *world_size != 1) {
    throw std::invalid_argument(fmt::format(
        "--world-size {} without a rank: give --rank too, or run under torchrun, srun or a "
        "Kubernetes Indexed Job",
        *world_size));
  }
  if (info.world_size < 1) {
    throw std::invalid_argument(fmt::format("the world size ({}) must be at least 1, found {}",
                                            to_string(info.launcher), info.world_size));
  }
  if (info.rank >= info.world_size) {
    throw std::invalid_argument(
        fmt::format("the rank must be below the world size ({}): found rank {} of world size {}",
                    to_string(info.launcher), info.rank, info.world_size));
  }
  return info;
}

int64_t cuda_device_for(int64_t local_rank, int64_t device_count) {
  if (device_count < 1) throw std::runtime_error("no CUDA device is available");
  if (local_rank < device_count) return local_rank;
  if (device_count == 1) return 0;  // one device per rank (CUDA_VISIBLE_DEVICES set per task)
  throw std::runtime_error(fmt::format(
      "local rank {} has no GPU of its own: {} CUDA devices are visible; start at most that many "
      "ranks per machine, or give each rank one device (CUDA_VISIBLE_DEVICES)",
      local_rank, device_count));
}

}  // namespace rmt::batch
