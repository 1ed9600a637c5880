#pragma once
// "Every rank has finished": the barrier before rank 0 merges, through the c10d TCPStore that
// LibTorch ships (torchrun's agent store, or one that rank 0 serves at MASTER_ADDR:MASTER_PORT).
// Optional at compile time: without it, or without MASTER_ADDR/MASTER_PORT, the run directory
// tells when every chunk is finished (RunDirectory::missing_chunks) and the last rank merges.

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "rmt/batch/launcher.h"

namespace rmt::batch {

class FinishBarrier {
 public:
  // Whether this build of rmt has the TCPStore barrier.
  static bool available();

  // Connects to the launcher's store when world_size > 1 and MASTER_ADDR and MASTER_PORT are set:
  // as a client when torchrun's agent serves it (TORCHELASTIC_USE_AGENT_STORE=True), else rank 0
  // serves it and the others connect, retrying for `connect_timeout`. `job` tells runs apart in a
  // shared store (e.g. a hash of the run directory); a torchrun restart or a Slurm requeue gets a
  // fresh count. Returns nullptr, with the reason in *why_not, when there is no store to use.
  static std::unique_ptr<FinishBarrier> connect(const RankInfo& rank, const Environment& env,
                                                const std::string& job,
                                                std::chrono::milliseconds connect_timeout,
                                                std::string* why_not);
  ~FinishBarrier();

  // This rank has finished its share. Returns whether rank 0 is still waiting to merge (false when
  // it gave up: the caller then checks the run directory itself). Throws when the store is lost
  // (rank 0, which serves it outside torchrun, has exited).
  bool arrive();
  // This rank has failed: rank 0 stops waiting and says so.
  void report_failure(const std::string& message);
  // Rank 0: blocks until every rank has arrived, or `finished_otherwise` returns true (e.g. every
  // chunk is on disk, which also counts ranks that finished in an earlier attempt). Throws
  // std::runtime_error when a rank reported a failure, when the store is lost, or after `timeout`
  // (zero: no limit), having told the others that it no longer waits (see arrive). `waiting` is
  // called now and then with the number of ranks still missing.
  void wait_for_all(const std::function<bool()>& finished_otherwise, std::chrono::seconds timeout,
                    const std::function<void(int64_t missing)>& waiting);

 private:
  struct Impl;
  explicit FinishBarrier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rmt::batch
