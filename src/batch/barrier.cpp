#include "rmt/batch/barrier.h"

#include <condition_variable>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#ifdef RMT_WITH_TCPSTORE
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>
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

namespace {

// Connects to the store and checks one round trip (a value set and read back), with deadlines:
// the store may speak another protocol (torchrun from torch 2.x serves a TCPStore whose query codes
// differ from LibTorch 1.13's), and then a call never returns or returns garbage. The work runs
// in a detached thread that owns what it touches, so a call that never returns is left behind.
c10::intrusive_ptr<c10d::TCPStore> connect_and_probe(const std::string& addr,
                                                     const c10d::TCPStoreOptions& options,
                                                     const std::string& probe_key) {
  struct State {
    std::mutex mutex;
    std::condition_variable changed;
    bool connected = false, done = false;
    c10::intrusive_ptr<c10d::TCPStore> store;
    std::exception_ptr error;
  };
  auto state = std::make_shared<State>();
  std::thread([state, addr, options, probe_key] {
    try {
      auto store = c10::make_intrusive<c10d::TCPStore>(addr, options);
      {
        std::lock_guard<std::mutex> lock(state->mutex);
        state->connected = true;
      }
      state->changed.notify_all();
      const std::vector<uint8_t> hello = {'r', 'm', 't'};
      store->set(probe_key, hello);
      if (store->get(probe_key) != hello) {
        throw std::runtime_error("a value set in the store read back differently");
      }
      std::lock_guard<std::mutex> lock(state->mutex);
      state->store = std::move(store);
      state->done = true;
    } catch (...) {
      std::lock_guard<std::mutex> lock(state->mutex);
      state->error = std::current_exception();
      state->done = true;
    }
    state->changed.notify_all();
  }).detach();

  std::unique_lock<std::mutex> lock(state->mutex);
  // Connecting retries until the server is up (rank 0 may start last): the caller's timeout, and
  // a little more for the constructor's own bookkeeping.
  const auto connect_deadline = std::chrono::steady_clock::now() + options.timeout +
                                std::chrono::seconds(5);
  if (!state->changed.wait_until(lock, connect_deadline,
                                 [&] { return state->connected || state->done; })) {
    throw std::runtime_error(
        fmt::format("no connection within {} s", options.timeout.count() / 1000));
  }
  // Once connected, a round trip takes milliseconds.
  constexpr auto kAnswer = std::chrono::seconds(10);
  if (!state->changed.wait_for(lock, kAnswer, [&] { return state->done; })) {
    throw std::runtime_error(
        "connected, but the store did not answer within 10 s: a launcher built with another "
        "torch version? This rmt uses the TCPStore of LibTorch " TORCH_VERSION);
  }
  if (state->error) std::rethrow_exception(state->error);
  return state->store;
}

}  // namespace

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
    throw std::invalid_argument(
        fmt::format("MASTER_PORT: expected a port number, found '{}'", port_text->substr(0, 40)));
  }
  const bool agent_store = env("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  options.isServer = !agent_store && rank.rank == 0;
  options.waitWorkers = false;
  options.timeout = connect_timeout;
  auto impl = std::make_unique<Impl>();
  try {
    impl->store =
        connect_and_probe(*addr, options, fmt::format("rmt-batch/{}/hello/{}", job, rank.rank));
  } catch (const std::exception& e) {
    return reason(fmt::format("cannot use the store at {}:{}: {}", *addr, *port_text,
                              std::string(e.what()).substr(0, 300)));
  }
  // A restart of the whole job (torchrun's restarts, a Slurm requeue) counts afresh.
  const std::string attempt = fmt::format(
      "{}.{}.{}.{}.{}", env("TORCHELASTIC_RUN_ID").value_or(""),
      env("TORCHELASTIC_RESTART_COUNT").value_or(""), env("SLURM_JOB_ID").value_or(""),
      env("SLURM_STEP_ID").value_or(""), env("SLURM_RESTART_COUNT").value_or(""));
  impl->prefix = fmt::format("rmt-batch/{}/{}/", job, attempt);
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
        throw std::runtime_error(
            fmt::format("another rank failed: {}", std::string(text.begin(), text.end())));
      }
    } catch (const std::runtime_error&) {
      throw;
    } catch (const std::exception& e) {
      throw std::runtime_error(
          fmt::format("lost the barrier's store: {}", std::string(e.what()).substr(0, 300)));
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
