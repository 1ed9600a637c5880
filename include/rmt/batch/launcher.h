#pragma once
// Which part of a batch job this process does: its rank and the world size, taken from the launcher
// that started it (torchrun, Slurm's srun, a Kubernetes Indexed Job) or from explicit flags. There
// is no scheduler of our own: every rank computes its share of the inputs from these two numbers.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace rmt::batch {

enum class Launcher {
  Single,      // no launcher: rank 0 of 1
  Flags,       // --rank / --world-size
  Torchrun,    // RANK, WORLD_SIZE, LOCAL_RANK
  Slurm,       // SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID (inside srun)
  IndexedJob,  // JOB_COMPLETION_INDEX; the completions count: --world-size or RMT_WORLD_SIZE
};
std::string to_string(Launcher launcher);

struct RankInfo {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;  // among the ranks of this machine: picks the GPU
  Launcher launcher = Launcher::Single;

  // "rank 2/8 (torchrun)"
  std::string describe() const;
};

// An environment lookup: the variable's value, or nullopt when it is not set.
using Environment = std::function<std::optional<std::string>(const std::string& name)>;
// The process's own environment (getenv).
Environment process_environment();

// A Kubernetes Indexed Job gives each pod its index but not the completions count: this variable
// (or --world-size) must carry it.
inline constexpr const char* kWorldSizeVariable = "RMT_WORLD_SIZE";

// The rank of this process, first match wins:
//   1. rank and world_size given (the tools' --rank/--world-size; one alone is an error);
//   2. torchrun: RANK and WORLD_SIZE (LOCAL_RANK);
//   3. Slurm inside srun: SLURM_PROCID and SLURM_STEP_NUM_TASKS (SLURM_LOCALID). A batch script
//      outside srun has SLURM_PROCID but is one process, not a rank of a step: it is not a match;
//   4. a Kubernetes Indexed Job: JOB_COMPLETION_INDEX, the world size from world_size or
//      RMT_WORLD_SIZE;
//   5. otherwise one process, rank 0 of 1.
// A world_size given next to a launcher's own must agree with it. Throws std::invalid_argument
// naming the flag or variable when a value is not a number, a rank is not below the world size, or
// a needed value is missing.
RankInfo detect_rank(std::optional<int64_t> rank, std::optional<int64_t> world_size,
                     const Environment& env = process_environment());

// The CUDA device index for a local rank: the local rank itself, or 0 when the launcher left each
// rank a single visible device (CUDA_VISIBLE_DEVICES per task). Throws when the local rank has no
// device of its own.
int64_t cuda_device_for(int64_t local_rank, int64_t device_count);

}  // namespace rmt::batch
