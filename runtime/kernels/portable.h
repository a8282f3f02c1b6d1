// The only place where the GPU and the host builds of the executor differ.
//
// The executor (executor.cuh) is written for a CUDA thread block. Under NVRTC (__CUDACC__) the
// helpers below map to thread indices, PTX release/acquire at system scope, __nanosleep and the
// global timer. Under the host C++ compiler a "block" is one thread: indices are 0 of 1, block
// barriers are no-ops, atomics are GCC's __atomic builtins, and copies are memcpy.
#pragma once

#if defined(__CUDACC__)

typedef signed char i8;
typedef unsigned char u8;
typedef unsigned short u16;
typedef int i32;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define SY_FN __device__ __forceinline__
#define SY_METHOD __device__ __forceinline__  // member functions

SY_FN int sy_thread() { return threadIdx.x; }
SY_FN int sy_nthreads() { return blockDim.x; }
// True on some thread of the block, seen by all; also a block barrier.
SY_FN bool sy_block_any(bool value) { return __syncthreads_or(value) != 0; }
SY_FN void sy_block_sync() { __syncthreads(); }

// Counters written by another GPU or process: acquire makes the data written before the matching
// release visible to this thread (and, after a block barrier, to the block).
SY_FN i64 sy_load_acquire(const i64* p) {
  i64 v;
  asm volatile("ld.acquire.sys.b64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
// Publishes everything this block wrote before it (the caller has passed a block barrier).
SY_FN void sy_store_release(i64* p, i64 v) {
  __threadfence_system();
  asm volatile("st.release.sys.b64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
SY_FN i64 sy_load_relaxed(const i64* p) {
  i64 v;
  asm volatile("ld.relaxed.sys.b64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
SY_FN void sy_store_relaxed(i64* p, i64 v) { asm volatile("st.relaxed.sys.b64 [%0], %1;" ::"l"(p), "l"(v) : "memory"); }
// Set *p from expected to desired if no one else did first; true for the one that did.
SY_FN bool sy_claim(i64* p, i64 expected, i64 desired) { return atomicCAS((unsigned long long*)p, (unsigned long long)expected, (unsigned long long)desired) == (unsigned long long)expected; }
SY_FN i64 sy_now_ns() {
  u64 t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return (i64)t;
}
SY_FN void sy_pause() { __nanosleep(64); }

SY_FN float sy_half_to_float(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
SY_FN u16 sy_float_to_half(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
SY_FN float sy_bits_to_float(u32 bits) { return __uint_as_float(bits); }
SY_FN u32 sy_float_to_bits(float f) { return __float_as_uint(f); }

// Copy nbytes with every thread of the block: 16-byte words when both ends allow, else bytes.
SY_FN void sy_copy_bytes(u8* dst, const u8* src, i64 nbytes) {
  const int t = sy_thread(), n = sy_nthreads();
  if ((((u64)dst | (u64)src | (u64)nbytes) & 15) == 0) {
    uint4* d = (uint4*)dst;
    const uint4* s = (const uint4*)src;
    for (i64 i = t; i < nbytes / 16; i += n) d[i] = s[i];
  } else {
    for (i64 i = t; i < nbytes; i += n) dst[i] = src[i];
  }
}

#else  // host build

#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef int8_t i8;
typedef uint8_t u8;
typedef uint16_t u16;
typedef int32_t i32;
typedef uint32_t u32;
typedef int64_t i64;
typedef uint64_t u64;

#define SY_FN static inline
#define SY_METHOD inline

SY_FN int sy_thread() { return 0; }
SY_FN constexpr int sy_nthreads() { return 1; }
SY_FN bool sy_block_any(bool value) { return value; }
SY_FN void sy_block_sync() {}

// Counters shared with other processes through shared memory: acquire pairs with the writer's
// release, so the slot data written before a counter is visible once the counter is seen.
SY_FN i64 sy_load_acquire(const i64* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
SY_FN void sy_store_release(i64* p, i64 v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
SY_FN i64 sy_load_relaxed(const i64* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
SY_FN void sy_store_relaxed(i64* p, i64 v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
SY_FN bool sy_claim(i64* p, i64 expected, i64 desired) { return __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED); }
SY_FN i64 sy_now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (i64)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
SY_FN void sy_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

SY_FN float sy_half_to_float(u16 h) {
  _Float16 x;
  memcpy(&x, &h, 2);
  return (float)x;
}
SY_FN u16 sy_float_to_half(float f) {
  _Float16 x = (_Float16)f;  // round to nearest even, as numpy's float16
  u16 h;
  memcpy(&h, &x, 2);
  return h;
}
SY_FN float sy_bits_to_float(u32 bits) {
  float f;
  memcpy(&f, &bits, 4);
  return f;
}
SY_FN u32 sy_float_to_bits(float f) {
  u32 bits;
  memcpy(&bits, &f, 4);
  return bits;
}

SY_FN void sy_copy_bytes(u8* dst, const u8* src, i64 nbytes) { memcpy(dst, src, (size_t)nbytes); }

#endif
