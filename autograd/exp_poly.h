#pragma once
// The one exp(x) of the vector kernels (Cephes expf): x = k·ln2 + r with |r| <= ln2/2 (ln 2 split in
// a high and a low part so k·ln2 is exact), exp(r) ≈ 1 + r + r²·P(r) with the degree-5 P below, then
// scaled by 2^k. ~1 ulp on [-87, 88]. autograd/simd.h (vector extensions) and the attention kernels
// (attention_avx2.cpp / attention_avx512.cpp, intrinsics) evaluate exactly this; they differ only in
// how they clamp and build 2^k. No STL here: included by the *_avx*.cpp files (see CMakeLists.txt).
namespace ft::exp_poly {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
// P(r) = p0·r⁵ + p1·r⁴ + ... + p5, evaluated by Horner from p0.
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

}  // namespace ft::exp_poly
