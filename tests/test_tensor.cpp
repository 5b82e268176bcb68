#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "autograd/ops.h"

using namespace ft;

TEST(DType, Bf16RoundToNearestEvenBitPatterns) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x3f808001u)), 0x3f81);  // above tie
  EXPECT_EQ(f32_to_bf16(bits_to_f32(0x7f7fffffu)), 0x7f80);  // max float rounds to inf
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-INFINITY), 0xff80);
  uint16_t n = f32_to_bf16(bits_to_f32(0x7f800001u));        // signalling NaN with low payload only
  EXPECT_TRUE(std::isnan(bf16_to_f32(n)));
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(bf16_to_f32(0x4049), bits_to_f32(0x40490000u));
}

TEST(DType, Fp16SubnormalsInfNan) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65504.f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.f), 0x7c00);            // rounds to inf
  EXPECT_EQ(f32_to_f16(65519.f), 0x7bff);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.f, -25)), 0x0000);  // tie to even -> 0
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(3.f, -25)), 0x0002);   // 1.5 ulp tie -> even (2)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.f, -14)), 0x0400);   // smallest normal
  EXPECT_EQ(f32_to_f16(-2.f), 0xc000);
  EXPECT_EQ(f32_to_f16(INFINITY), 0x7c00);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.f, -24));
  EXPECT_EQ(f16_to_f32(0x03ff), std::ldexp(1023.f, -24));
  EXPECT_EQ(f16_to_f32(0x7c00), INFINITY);
  EXPECT_EQ(f16_to_f32(0xfc00), -INFINITY);
  // Every finite f16 round-trips exactly.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    ASSERT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << std::hex << h;
  }
}

TEST(Tensor, ViewsShareStorageAndContiguousCopies) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.raw(), t.raw());
  Tensor c = tt.contiguous();
  EXPECT_EQ(c.to_vector(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor s = t.slice(1, 1, 3);
  EXPECT_EQ(s.to_vector(), (std::vector<float>{1, 2, 4, 5}));
  Tensor v = t.view({3, -1});
  EXPECT_EQ(v.shape(), (Shape{3, 2}));
  EXPECT_EQ(v.raw(), t.raw());
  EXPECT_THROW(tt.view({6}), Error);
  EXPECT_THROW(t.view({4, 2}), Error);
  EXPECT_EQ(uintptr_t(Tensor::empty({3, 5}).raw()) % 64, 0u);
}

TEST(Tensor, DtypeRoundTrip) {
  Tensor t = Tensor::from_vector({1.5f, -2.25f, 3.0f}, {3});
  EXPECT_EQ(t.to(DType::BF16).to(DType::F32).to_vector(), t.to_vector());
  EXPECT_EQ(t.to(DType::F16).to(DType::F32).to_vector(), t.to_vector());
}

TEST(Tensor, MisuseThrowsWithShapes) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5});
  try {
    matmul(a, b);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("matmul"), std::string::npos);
  }
  EXPECT_THROW(add(a, b), Error);
  EXPECT_THROW(linear(a, b), Error);
  EXPECT_THROW(embedding(a, Tensor::from_ids({5}, {1})), Error);
  EXPECT_THROW(Tensor::from_ids({0}, {1}).set_requires_grad(true), Error);
}

// Large blocks (autograd/tensor.h cached_storage_bytes): a freed block serves the next tensor of its
// size (or of at least half its size), a request that finds none frees cached blocks first when
// live + cached bytes would pass the process's high-water mark, and
// release_cached_storage hands everything back. Off under AddressSanitizer / FT_STORAGE_CACHE=0,
// where nothing is ever cached.
TEST(Tensor, LargeBlocksAreReusedAndReleased) {
  release_cached_storage();
  const int64_t big = int64_t(1) << 19;  // 2 MiB of float32
  const void* first;
  {
    Tensor a = Tensor::empty({big});
    first = a.raw();
  }
  const bool on = cached_storage_bytes() > 0;
  if (!on) GTEST_SKIP() << "storage cache off (sanitizer build or FT_STORAGE_CACHE=0)";
  EXPECT_EQ(cached_storage_bytes(), size_t(big) * 4);
  {
    Tensor b = Tensor::empty({big});  // the same block again, and the cache is empty meanwhile
    EXPECT_EQ(b.raw(), first);
    EXPECT_EQ(cached_storage_bytes(), 0u);
    b.fill_(1.f);
  }
  {
    Tensor c = Tensor::empty({big * 3 / 4});  // at least half the cached block: served by it
    EXPECT_EQ(c.raw(), first);
  }
  EXPECT_EQ(cached_storage_bytes(), size_t(big) * 4);  // returned with its own size
  {
    // nothing fits, and live + cached bytes would pass the process's high-water mark by more than
    // the slack (5%, at most 128 MiB): the cached block is freed first (d's pages are never touched)
    const MemoryStats ms = memory_stats();
    const int64_t n = (ms.high_water - ms.current) / 4 + big * 128;
    Tensor d = Tensor::empty({n});
    EXPECT_EQ(cached_storage_bytes(), 0u);
  }
  EXPECT_GE(cached_storage_bytes(), size_t(big) * 512);
  EXPECT_GT(release_cached_storage(), 0u);
  EXPECT_EQ(cached_storage_bytes(), 0u);
  {
    Tensor small = Tensor::empty({1000});  // small blocks go straight back to the C library
  }
  EXPECT_EQ(cached_storage_bytes(), 0u);
}
