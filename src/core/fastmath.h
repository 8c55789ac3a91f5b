/* Gate nonlinearities.
 *
 * float: exp from a range reduction and a degree-6 polynomial (about 1 ulp), written
 * without calls or branches so the compiler vectorises the fused gate loops; libm's expf
 * and tanhf are scalar calls that would cost more than the GEMMs at our sizes.
 * double: libm, since double is the path of gradient checks, where accuracy is the point.
 */
#ifndef PREDTEXT_FASTMATH_H
#define PREDTEXT_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float pt_expf(float x)
{
    /* Clamp so 2^n stays a normal float; exp(-87.3) is already below FLT_MIN. */
    x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
    /* Round x / ln 2 to the nearest integer by adding and removing 1.5 * 2^23: no floor
     * call, so even the baseline SSE2 build vectorises this. */
    const float shifter = 12582912.0f;
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    /* ln 2 split in two so r = x - n ln2 keeps its low bits. */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float pt_sigmoidf(float x) { return 1.0f / (1.0f + pt_expf(-x)); }

static inline float pt_tanhf(float x)
{
    float ax = x < 0.0f ? -x : x;
    /* Near zero 1 - 2/(e^2x + 1) cancels; an odd polynomial keeps the relative error. */
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    float big = 1.0f - 2.0f / (pt_expf(2.0f * ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    return ax < 0.625f ? small : big;
}

static inline double pt_sigmoidd(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double pt_tanhd(double x) { return tanh(x); }

#endif
