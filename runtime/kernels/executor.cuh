// The executor: one thread block per channel of a rank's plan, interpreting its steps.
//
// The plan is flat int64 tables whose layout is synccl_abi.h (generated from
// synccl/runtime/_kernel_abi.py). A step is one instruction of one tile. It runs once its
// dependencies are complete, its incoming message (if any) has arrived and its outgoing FIFO (if
// any) has a free slot; then every thread of the block moves or reduces its share of the data, and
// thread 0 publishes: the receive counter (tail) and send counter (head) of a connection only
// grow, across calls, so they are the semaphores between ranks (release on signal, acquire on
// wait). MSCCL's executor kernel and MSCCL++'s executor have the same shape.
//
// try_step() never waits: the GPU entry (executor.cu) calls it in a bounded spin per block; the
// host entry (host.cpp) calls it for every channel in turn, a cooperative scheduler.
#pragma once

#include "portable.h"
#include "synccl_abi.h"

namespace synccl {

// -- element types: how a value is loaded, combined and stored ----------------------------------

struct Half {
  typedef u16 Storage;
  typedef float Value;
  static constexpr bool kInteger = false;
  SY_METHOD static Value load(Storage s) { return sy_half_to_float(s); }
  SY_METHOD static Storage store(Value v) { return sy_float_to_half(v); }
};

struct BFloat16 {
  typedef u16 Storage;
  typedef float Value;
  static constexpr bool kInteger = false;
  SY_METHOD static Value load(Storage s) { return sy_bits_to_float((u32)s << 16); }
  // Round to nearest even, as ml_dtypes and the GPU's cvt.rn.bf16 do; NaN stays a (quiet) NaN.
  SY_METHOD static Storage store(Value v) {
    u32 bits = sy_float_to_bits(v);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (Storage)((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (Storage)(bits >> 16);
  }
};

template <class T, class Unsigned, bool Integer>
struct Plain {
  typedef T Storage;
  typedef T Value;
  typedef Unsigned Wrapping;  // integer sums and products wrap, as numpy's and NCCL's do
  static constexpr bool kInteger = Integer;
  SY_METHOD static Value load(Storage s) { return s; }
  SY_METHOD static Storage store(Value v) { return v; }
};

typedef Plain<float, float, false> Float32;
typedef Plain<double, double, false> Float64;
typedef Plain<i8, u8, true> Int8;
typedef Plain<i32, u32, true> Int32;
typedef Plain<i64, u64, true> Int64;
typedef Plain<u8, u8, true> UInt8;  // bool too: 0 and 1, for which min, max and the bitwise ops hold

template <int OP, class E>
SY_FN typename E::Value apply(typename E::Value a, typename E::Value b) {
  if constexpr (OP == OP_SUM) {
    if constexpr (E::kInteger) return (typename E::Value)((typename E::Wrapping)a + (typename E::Wrapping)b);
    else return a + b;
  } else if constexpr (OP == OP_PROD) {
    if constexpr (E::kInteger) return (typename E::Value)((typename E::Wrapping)a * (typename E::Wrapping)b);
    else return a * b;
  } else if constexpr (OP == OP_MIN) {
    if constexpr (E::kInteger) return a < b ? a : b;
    else return a != a ? a : b != b ? b : a < b ? a : b;  // NaN wins, as numpy.minimum
  } else if constexpr (OP == OP_MAX) {
    if constexpr (E::kInteger) return a > b ? a : b;
    else return a != a ? a : b != b ? b : a > b ? a : b;
  } else if constexpr (OP == OP_BAND) {
    return a & b;
  } else if constexpr (OP == OP_BOR) {
    return a | b;
  } else {
    return a ^ b;
  }
}

// out[r] = a[r] (op) b[r] for each of `rows` rows of `row_bytes`; also into out2 when given.
struct Rows {
  i64 rows, row_bytes;
};

template <class E, int OP>
SY_FN void combine_rows(Rows shape, u8* out, i64 out_stride, u8* out2, i64 out2_stride, const u8* a, i64 a_stride, const u8* b, i64 b_stride) {
  typedef typename E::Storage S;
  const i64 n = shape.row_bytes / (i64)sizeof(S);
  for (i64 r = 0; r < shape.rows; ++r) {
    S* o = (S*)(out + r * out_stride);
    const S* x = (const S*)(a + r * a_stride);
    const S* y = (const S*)(b + r * b_stride);
    if (out2 == nullptr) {
      for (i64 i = sy_thread(); i < n; i += sy_nthreads()) o[i] = E::store(apply<OP, E>(E::load(x[i]), E::load(y[i])));
    } else {
      S* o2 = (S*)(out2 + r * out2_stride);
      for (i64 i = sy_thread(); i < n; i += sy_nthreads()) o2[i] = o[i] = E::store(apply<OP, E>(E::load(x[i]), E::load(y[i])));
    }
  }
}

template <class E>
SY_FN void combine_typed(i64 op, Rows shape, u8* out, i64 out_stride, u8* out2, i64 out2_stride, const u8* a, i64 a_stride, const u8* b, i64 b_stride) {
  switch (op) {
    case OP_SUM: return combine_rows<E, OP_SUM>(shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    case OP_PROD: return combine_rows<E, OP_PROD>(shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    case OP_MIN: return combine_rows<E, OP_MIN>(shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    case OP_MAX: return combine_rows<E, OP_MAX>(shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    default:
      if constexpr (E::kInteger) {  // the caller refuses bitwise ops on floats
        if (op == OP_BAND) return combine_rows<E, OP_BAND>(shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
        if (op == OP_BOR) return combine_rows<E, OP_BOR>(shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
        return combine_rows<E, OP_BXOR>(shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
      }
  }
}

SY_FN void combine(i64 dtype, i64 op, Rows shape, u8* out, i64 out_stride, u8* out2, i64 out2_stride, const u8* a, i64 a_stride, const u8* b, i64 b_stride) {
  switch (dtype) {
    case DTYPE_FLOAT16: return combine_typed<Half>(op, shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    case DTYPE_BFLOAT16: return combine_typed<BFloat16>(op, shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    case DTYPE_FLOAT32: return combine_typed<Float32>(op, shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    case DTYPE_FLOAT64: return combine_typed<Float64>(op, shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    case DTYPE_INT8: return combine_typed<Int8>(op, shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    case DTYPE_INT32: return combine_typed<Int32>(op, shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    case DTYPE_INT64: return combine_typed<Int64>(op, shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);
    default: return combine_typed<UInt8>(op, shape, out, out_stride, out2, out2_stride, a, a_stride, b, b_stride);  // UINT8, BOOL
  }
}

SY_FN void copy_rows(Rows shape, u8* out, i64 out_stride, const u8* src, i64 src_stride) {
  if (shape.rows == 1 || (out_stride == shape.row_bytes && src_stride == shape.row_bytes)) {
    sy_copy_bytes(out, src, shape.rows * shape.row_bytes);
    return;
  }
  for (i64 r = 0; r < shape.rows; ++r) sy_copy_bytes(out + r * out_stride, src + r * src_stride, shape.row_bytes);
}

// -- the plan ---------------------------------------------------------------------------------------

template <class T>
SY_FN T* at(i64 address) {
  return (T*)(u64)address;
}

SY_FN const i64* channel_row(const i64* L, i64 c) { return at<const i64>(L[LAUNCH_CHANNELS]) + c * CHANNEL_COUNT; }
SY_FN i64* state_row(const i64* L, i64 c) { return at<i64>(L[LAUNCH_STATE]) + c * STATE_COUNT; }

SY_FN u8* buffer_at(const i64* L, i64 buffer, i64 offset) {
  const i64 base = buffer == BUFFER_INPUT ? L[LAUNCH_INPUT] : buffer == BUFFER_OUTPUT ? L[LAUNCH_OUTPUT] : L[LAUNCH_SCRATCH];
  return at<u8>(base + offset);
}

// Why a step cannot run yet, or -1 when it can.
enum Wait { READY = -1, WAIT_DEPENDENCY = 0, WAIT_MESSAGE = 1, WAIT_SLOT = 2, WAIT_LENT_READ = 3 };

enum Progress { BLOCKED = 0, ADVANCED = 1, FINISHED = 2, FAILED = 3 };

SY_FN int blocked_on(const i64* L, const i64* chan, const i64* state, const i64* step) {
  const i64 flags = step[STEP_FLAGS];
  const i64* deps = at<const i64>(L[LAUNCH_DEPS]) + 2 * step[STEP_DEP_FIRST];
  for (i64 d = 0; d < step[STEP_DEP_COUNT]; ++d) {
    // Pairs with the release of POSITION by the other block: its data writes are visible.
    if (sy_load_acquire(&state_row(L, deps[2 * d])[STATE_POSITION]) < deps[2 * d + 1]) return WAIT_DEPENDENCY;
  }
  // Pairs with the sender's release of head: the slot and descriptor it wrote are visible.
  if ((flags & FLAG_RECEIVES) && sy_load_acquire(at<const i64>(chan[CHANNEL_RECV_HEAD])) <= state[STATE_RECEIVED]) return WAIT_MESSAGE;
  // Pairs with the receiver's release of tail: it no longer reads the slot we will overwrite.
  if ((flags & FLAG_SENDS) && state[STATE_SENT] - sy_load_acquire(at<const i64>(chan[CHANNEL_SEND_TAIL])) >= L[LAUNCH_NSLOTS]) return WAIT_SLOT;
  return READY;
}

// Thread 0 records a failure (the first one wins) for the caller to turn into an exception.
SY_FN void report_failure(const i64* L, i64 status, i64 c, i64 pos, i64 got, i64 expected) {
  i64* report = at<i64>(L[LAUNCH_REPORT]);
  if (sy_claim(&report[REPORT_STATUS], STATUS_DONE, status)) {
    report[REPORT_CHANNEL] = c;
    report[REPORT_STEP] = pos;
    report[REPORT_GOT] = got;
    report[REPORT_EXPECTED] = expected;
  }
}

// Thread 0 checks the received message's signature and size; false (reported) when they differ.
SY_FN bool message_matches(const i64* L, const i64* desc, const i64* step, i64 c, i64 pos) {
  const i64 nbytes = step[STEP_ROWS] * step[STEP_ROW_BYTES];
  if (L[LAUNCH_CHECK] && desc[DESC_SIGNATURE] != L[LAUNCH_SIGNATURE]) {
    report_failure(L, STATUS_MISMATCH, c, pos, desc[DESC_SIGNATURE], L[LAUNCH_SIGNATURE]);
    return false;
  }
  if (desc[DESC_NBYTES] != nbytes) {
    report_failure(L, STATUS_SIZE, c, pos, desc[DESC_NBYTES], nbytes);
    return false;
  }
  return true;
}

// Run channel c's next step if it can run now. Every thread of the block calls it.
SY_FN int try_step(const i64* L, i64 c) {
  const i64* chan = channel_row(L, c);
  i64* state = state_row(L, c);
  const i64 pos = state[STATE_POSITION];
  if (pos >= chan[CHANNEL_NSTEPS]) {
    // Lent data is read in place by the peer: the call ends once the peer has consumed it all.
    const bool unread = sy_thread() == 0 && state[STATE_LENT] && sy_load_acquire(at<const i64>(chan[CHANNEL_SEND_TAIL])) < state[STATE_SENT];
    return sy_block_any(unread) ? BLOCKED : FINISHED;
  }
  if (pos == 0 && sy_thread() == 0) {
    // Connection counters carry over from the previous call; only this block writes them.
    if (chan[CHANNEL_RECV_TAIL]) state[STATE_RECEIVED] = sy_load_relaxed(at<const i64>(chan[CHANNEL_RECV_TAIL]));
    if (chan[CHANNEL_SEND_HEAD]) state[STATE_SENT] = sy_load_relaxed(at<const i64>(chan[CHANNEL_SEND_HEAD]));
  }
  const i64* step = at<const i64>(L[LAUNCH_STEPS]) + (chan[CHANNEL_FIRST_STEP] + pos) * STEP_COUNT;
  const i64 flags = step[STEP_FLAGS];
  const i64 nslots = L[LAUNCH_NSLOTS], stride = L[LAUNCH_SLOT_STRIDE];
  if (sy_block_any(sy_thread() == 0 && blocked_on(L, chan, state, step) != READY)) return BLOCKED;
  const i64 received = state[STATE_RECEIVED], sent = state[STATE_SENT];  // after the barrier: thread 0 set them

  const i64* desc = (flags & FLAG_RECEIVES) ? at<const i64>(chan[CHANNEL_RECV_DESC]) + (received % nslots) * DESC_COUNT : nullptr;
  if (desc && sy_block_any(sy_thread() == 0 && !message_matches(L, desc, step, c, pos))) return FAILED;

  const Rows shape = {step[STEP_ROWS], step[STEP_ROW_BYTES]};
  const i64 dtype = L[LAUNCH_DTYPE], op = L[LAUNCH_OP];
  const i64 src_stride = step[STEP_SRC_STRIDE], dst_stride = step[STEP_DST_STRIDE], packed = shape.row_bytes;
  const u8* src = (flags & FLAG_READS_SRC) ? buffer_at(L, step[STEP_SRC_BUFFER], step[STEP_SRC_OFFSET]) : nullptr;
  u8* dst = (flags & (FLAG_WRITES_DST | FLAG_READS_DST)) ? buffer_at(L, step[STEP_DST_BUFFER], step[STEP_DST_OFFSET]) : nullptr;
  u8* outgoing = ((flags & FLAG_SENDS) && !(flags & FLAG_LENDS)) ? at<u8>(chan[CHANNEL_SEND_SLOTS] + (sent % nslots) * stride) : nullptr;
  const u8* incoming = nullptr;
  if (desc) {
    const i64* regions = at<const i64>(L[LAUNCH_PEER_REGIONS]);
    incoming = desc[DESC_KIND] == MESSAGE_BY_REFERENCE ? at<const u8>(regions[chan[CHANNEL_RECV_PEER] * L[LAUNCH_REGION_CAP] + desc[DESC_REGION]] + desc[DESC_OFFSET])
                                                       : at<const u8>(chan[CHANNEL_RECV_SLOTS] + (received % nslots) * stride);
  }

  if ((flags & FLAG_REDUCES) && (flags & FLAG_READS_DST)) {  // REDUCE: dst (+)= src
    combine(dtype, op, shape, dst, dst_stride, nullptr, 0, dst, dst_stride, src, src_stride);
  } else if (flags & FLAG_REDUCES) {  // src (+) received, into dst and/or the outgoing slot
    u8* first = (flags & FLAG_WRITES_DST) ? dst : outgoing;
    const i64 first_stride = (flags & FLAG_WRITES_DST) ? dst_stride : packed;
    u8* second = ((flags & FLAG_WRITES_DST) && outgoing) ? outgoing : nullptr;
    combine(dtype, op, shape, first, first_stride, second, packed, src, src_stride, incoming, packed);
  } else if (flags & FLAG_RECEIVES) {  // the received data, into dst and/or on
    if (flags & FLAG_WRITES_DST) copy_rows(shape, dst, dst_stride, incoming, packed);
    if (outgoing) sy_copy_bytes(outgoing, incoming, shape.rows * packed);
  } else if (outgoing) {  // SEND
    copy_rows(shape, outgoing, packed, src, src_stride);
  } else if (flags & FLAG_WRITES_DST) {  // COPY
    copy_rows(shape, dst, dst_stride, src, src_stride);
  }
  sy_block_sync();  // every thread's writes are done before thread 0 publishes them

  if (sy_thread() == 0) {
    if (flags & FLAG_RECEIVES) {
      state[STATE_RECEIVED] = received + 1;
      sy_store_release(at<i64>(chan[CHANNEL_RECV_TAIL]), received + 1);  // the slot may be reused
    }
    if (flags & FLAG_SENDS) {
      i64* out_desc = at<i64>(chan[CHANNEL_SEND_DESC]) + (sent % nslots) * DESC_COUNT;
      out_desc[DESC_NBYTES] = shape.rows * packed;
      out_desc[DESC_SIGNATURE] = L[LAUNCH_SIGNATURE];
      out_desc[DESC_KIND] = (flags & FLAG_LENDS) ? MESSAGE_BY_REFERENCE : MESSAGE_INLINE;
      out_desc[DESC_REGION] = step[STEP_LEND_REGION];
      out_desc[DESC_OFFSET] = step[STEP_LEND_OFFSET];
      if (flags & FLAG_LENDS) state[STATE_LENT] = 1;
      state[STATE_SENT] = sent + 1;
      sy_store_release(at<i64>(chan[CHANNEL_SEND_HEAD]), sent + 1);  // slot and descriptor first
    }
    sy_store_release(&state[STATE_POSITION], pos + 1);  // dependent blocks see this step's writes
  }
  sy_block_sync();
  return ADVANCED;
}

// Where channel c waits (a Wait), for the caller's messages; READY when it does not.
SY_FN int waiting_for(const i64* L, i64 c) {
  const i64* chan = channel_row(L, c);
  const i64* state = state_row(L, c);
  const i64 pos = state[STATE_POSITION];
  if (pos >= chan[CHANNEL_NSTEPS]) return state[STATE_LENT] && sy_load_acquire(at<const i64>(chan[CHANNEL_SEND_TAIL])) < state[STATE_SENT] ? WAIT_LENT_READ : READY;
  return blocked_on(L, chan, state, at<const i64>(L[LAUNCH_STEPS]) + (chan[CHANNEL_FIRST_STEP] + pos) * STEP_COUNT);
}

}  // namespace synccl
