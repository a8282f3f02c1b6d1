// Host entry: every channel ("thread block") of the plan run by one thread, in turn.
//
// The same try_step() as on the GPU. A pass over all channels that advances none counts as idle:
// the thread spins briefly, then yields the CPU, then naps (so 8 ranks on 2 cores still make
// progress), and returns STALLED every CHECK_NS without progress so the caller can check its
// peers and the timeout, then call again to continue where it stopped.
#include "executor.cuh"

#include <time.h>

namespace {

constexpr i64 kSpinPasses = 64;
constexpr long kNapNs = 200 * 1000;

void nap() {
  struct timespec ts = {0, kNapNs};
  nanosleep(&ts, nullptr);
}

// Fill the report with the first waiting channel.
void describe_stall(const i64* L, i64* report) {
  for (i64 c = 0; c < L[LAUNCH_NCHANNELS]; ++c) {
    const int wait = synccl::waiting_for(L, c);
    if (wait != synccl::READY) {
      report[REPORT_CHANNEL] = c;
      report[REPORT_STEP] = synccl::state_row(L, c)[STATE_POSITION];
      report[REPORT_WAITS_FOR] = wait;
      return;
    }
  }
}

}  // namespace

// Run the launch record L until the call completes (DONE), fails, or stalls for CHECK_NS. A
// `fresh` run starts a call with this `signature`; otherwise it continues a stalled one.
extern "C" i64 synccl_host_run(i64* L, i64 signature, i64 fresh) {
  i64* report = synccl::at<i64>(L[LAUNCH_REPORT]);
  if (fresh) {
    L[LAUNCH_SIGNATURE] = signature;
    memset(synccl::at<i64>(L[LAUNCH_STATE]), 0, sizeof(i64) * STATE_COUNT * L[LAUNCH_NCHANNELS]);
    memset(report, 0, sizeof(i64) * REPORT_COUNT);
  }
  const i64* abort_word = synccl::at<const i64>(L[LAUNCH_ABORT]);
  const i64 nchannels = L[LAUNCH_NCHANNELS];
  i64 idle = report[REPORT_IDLE_PASSES];
  i64 return_at = 0;
  for (;;) {
    bool advanced = false, finished = true;
    for (i64 c = 0; c < nchannels; ++c) {
      int progress;
      while ((progress = synccl::try_step(L, c)) == synccl::ADVANCED) advanced = true;
      if (progress == synccl::FAILED) return report[REPORT_STATUS];
      if (progress == synccl::BLOCKED) finished = false;
    }
    if (finished) {
      report[REPORT_STALL_START_NS] = 0;
      report[REPORT_IDLE_PASSES] = 0;
      return STATUS_DONE;
    }
    if (advanced) {
      idle = 0;
      report[REPORT_STALL_START_NS] = 0;
      continue;
    }
    if (++idle < kSpinPasses) {
      sy_pause();
      continue;
    }
    const i64 now = sy_now_ns();
    if (report[REPORT_STALL_START_NS] == 0) report[REPORT_STALL_START_NS] = now;
    if (return_at == 0) return_at = now + L[LAUNCH_CHECK_NS];
    if (sy_load_relaxed(abort_word)) {
      report[REPORT_STATUS] = STATUS_ABORTED;
      return STATUS_ABORTED;
    }
    if (now - report[REPORT_STALL_START_NS] < L[LAUNCH_NAP_AFTER_NS]) {
      sched_yield();
    } else {
      nap();
    }
    if (now >= return_at) {
      report[REPORT_IDLE_PASSES] = idle;
      describe_stall(L, report);
      return STATUS_STALLED;
    }
  }
}
