#include "rmt/batch/barrier.h"

#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#ifdef RMT_WITH_TCPSTORE
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace rmt::batch {

#ifdef RMT_WITH_TCPSTORE

struct FinishBarrier::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
  std::string prefix;
  int64_t world_size = 1;

  std::string key(const std::string& name) const { return prefix + name; }
  static std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
};

bool FinishBarrier::available() { return true; }

std::unique_ptr<FinishBarrier> FinishBarrier::connect(const RankInfo& rank, const Environment& env,
                                                      const std::string& job,
                                                      std::chrono::milliseconds connect_timeout,
                                                      std::string* why_not) {
  const auto reason = [&](const std::string& text) {
    if (why_not) *why_not = text;
    return nullptr;
  };
  if (rank.world_size <= 1) return reason("one rank");
  const auto addr = env("MASTER_ADDR"), port_text = env("MASTER_PORT");
  if (!addr || !port_text) return reason("MASTER_ADDR and MASTER_PORT are not set");
  int port = 0;
  try {
    size_t used = 0;
    port = std::stoi(*port_text, &used);
    if (used != port_text->size() || port < 1 || port > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    throw std::invalid_argument("MASTER_PORT: expected a port number, found '" +
                                port_text->substr(0, 40) + "'");
  }
  const bool agent_store = env("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  options.isServer = !agent_store && rank.rank == 0;
  options.waitWorkers = false;
  options.timeout = connect_timeout;
  auto impl = std::make_unique<Impl>();
  try {
    impl->store = c10::make_intrusive<c10d::TCPStore>(*addr, options);
  } catch (const std::exception& e) {
    return reason("cannot reach the store at " + *addr + ":" + *port_text + ": " +
                  std::string(e.what()).substr(0, 300));
  }
  // A restart of the whole job (torchrun's restarts, a Slurm requeue) counts afresh.
  const std::string attempt =
      env("TORCHELASTIC_RUN_ID").value_or("") + "." +
      env("TORCHELASTIC_RESTART_COUNT").value_or("") + "." + env("SLURM_JOB_ID").value_or("") +
      "." + env("SLURM_STEP_ID").value_or("") + "." + env("SLURM_RESTART_COUNT").value_or("");
  impl->prefix = "rmt-batch/" + job + "/" + attempt + "/";
  impl->world_size = rank.world_size;
  return std::unique_ptr<FinishBarrier>(new FinishBarrier(std::move(impl)));
}

bool FinishBarrier::arrive() {
  impl_->store->add(impl_->key("finished"), 1);
  return !impl_->store->check({impl_->key("rank0-left")});
}

void FinishBarrier::report_failure(const std::string& message) {
  impl_->store->set(impl_->key("failed"), Impl::bytes(message.substr(0, 500)));
}

void FinishBarrier::wait_for_all(const std::function<bool()>& finished_otherwise,
                                 std::chrono::seconds timeout,
                                 const std::function<void(int64_t)>& waiting) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto last_news = start, last_disk_check = start - std::chrono::hours(1);
  for (;;) {
    int64_t arrived = 0;
    try {
      arrived = impl_->store->add(impl_->key("finished"), 0);
      if (impl_->store->check({impl_->key("failed")})) {
        const auto text = impl_->store->get(impl_->key("failed"));
        throw std::runtime_error("another rank failed: " + std::string(text.begin(), text.end()));
      }
    } catch (const std::runtime_error&) {
      throw;
    } catch (const std::exception& e) {
      throw std::runtime_error("lost the barrier's store: " + std::string(e.what()).substr(0, 300));
    }
    if (arrived >= impl_->world_size) return;
    const auto now = Clock::now();
    if (now - last_disk_check >= std::chrono::seconds(5)) {
      last_disk_check = now;
      if (finished_otherwise && finished_otherwise()) return;
    }
    if (timeout.count() > 0 && now - start >= timeout) {
      // Tell the ranks still to come that the last of them merges; one that arrived meanwhile
      // is still counted.
      impl_->store->set(impl_->key("rank0-left"), Impl::bytes("1"));
      if (impl_->store->add(impl_->key("finished"), 0) >= impl_->world_size) return;
      throw std::runtime_error(
          fmt::format("timed out after {} s waiting for {} rank(s) to finish (--merge-wait)",
                      timeout.count(), impl_->world_size - arrived));
    }
    if (waiting && now - last_news >= std::chrono::seconds(60)) {
      last_news = now;
      waiting(impl_->world_size - arrived);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

#else  // no TCPStore in this build

struct FinishBarrier::Impl {};

bool FinishBarrier::available() { return false; }

std::unique_ptr<FinishBarrier> FinishBarrier::connect(const RankInfo&, const Environment&,
                                                      const std::string&, std::chrono::milliseconds,
                                                      std::string* why_not) {
  if (why_not) *why_not = "this build of rmt has no c10d TCPStore";
  return nullptr;
}

bool FinishBarrier::arrive() { return false; }
void FinishBarrier::report_failure(const std::string&) {}
void FinishBarrier::wait_for_all(const std::function<bool()>&, std::chrono::seconds,
                                 const std::function<void(int64_t)>&) {}

#endif

FinishBarrier::FinishBarrier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FinishBarrier::~FinishBarrier() = default;

}  // namespace rmt::batch
