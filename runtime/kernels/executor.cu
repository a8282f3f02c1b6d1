// GPU entry: one thread block per channel of the plan, compiled by NVRTC.
//
// Each block runs its channel's steps with try_step(); while a step cannot run, the block backs
// off with __nanosleep and gives up when the host sets the abort word or when TIMEOUT_NS pass
// without progress, so no wait is unbounded. A failure in one block sets the abort word, which
// stops the others. The abort word lives in host memory (a read crosses PCIe, about a
// microsecond), so a waiting block looks at it, and at the clock, once every kCheckEvery tries.
#include "executor.cuh"

constexpr i64 kCheckEvery = 32;  // blocked tries between looks at the abort word and the clock

extern "C" __global__ void synccl_executor(i64* L) {
  const i64 c = blockIdx.x;
  if (c >= L[LAUNCH_NCHANNELS]) return;
  i64* abort_word = synccl::at<i64>(L[LAUNCH_ABORT]);
  i64 stalled_since = 0, blocked_tries = 0;
  for (;;) {
    const int progress = synccl::try_step(L, c);
    if (progress == synccl::FINISHED) return;
    if (progress == synccl::FAILED) {
      if (sy_thread() == 0) sy_store_relaxed(abort_word, 1);
      return;
    }
    if (progress == synccl::ADVANCED) {
      stalled_since = 0;
      blocked_tries = 0;
      continue;
    }
    // try_step's result is the same for every thread of the block, so they all take this branch together.
    if (++blocked_tries % kCheckEvery != 0) {
      sy_pause();
      continue;
    }
    bool give_up = false;
    if (sy_thread() == 0) {
      const i64 now = sy_now_ns();
      if (stalled_since == 0) stalled_since = now;
      if (sy_load_relaxed(abort_word)) {
        synccl::report_failure(L, STATUS_ABORTED, c, synccl::state_row(L, c)[STATE_POSITION], 0, 0);
        give_up = true;
      } else if (now - stalled_since > L[LAUNCH_TIMEOUT_NS]) {
        synccl::report_failure(L, STATUS_TIMEOUT, c, synccl::state_row(L, c)[STATE_POSITION], synccl::waiting_for(L, c), 0);
        sy_store_relaxed(abort_word, 1);
        give_up = true;
      }
    }
    if (sy_block_any(give_up)) return;
    sy_pause();
  }
}
