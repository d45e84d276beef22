"use strict";
// The decoder's forward pass, run on the layer specs that vaekit/explorer/layers.py exports.
// Weights are float32 (Float32Array); sums are accumulated in JavaScript numbers (float64) and
// every layer's output is stored as float32, so results match PyTorch's float32 decode to ~1e-6.
// Between layers one example is a flat Float32Array in PyTorch's row-major order (C, H, W for
// images), with its shape alongside; a reshape changes only the shape.
// A new layer type is one entry in LAYER_BUILDERS, matching one exporter in layers.py.

const VaekitDecoder = (() => {
  function bytesFromBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function float32FromBase64(text) {
    return new Float32Array(bytesFromBase64(text).buffer); // little-endian, as every browser's platform
  }

  // erf to ~1e-13: its Taylor series below 3, where it converges quickly, and a Chebyshev fit of
  // erfc (Numerical Recipes' erfcc, relative error < 1.2e-7 of a value below 2.3e-5) above.
  function erf(x) {
    const a = Math.abs(x);
    if (a >= 3) {
      const t = 1 / (1 + 0.5 * a);
      const erfc = t * Math.exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
      return x > 0 ? 1 - erfc : erfc - 1;
    }
    const x2 = x * x;
    let term = x;
    let sum = x;
    for (let n = 1; n < 100; n++) {
      term *= -x2 / n;
      const next = term / (2 * n + 1);
      sum += next;
      if (Math.abs(next) < 1e-17 * Math.abs(sum)) break;
    }
    return sum * 1.1283791670955126; // 2 / sqrt(pi)
  }

  function sigmoid(x) {
    if (x >= 0) return 1 / (1 + Math.exp(-x));
    const e = Math.exp(x);
    return e / (1 + e);
  }

  // Elementwise, in place, with the parameters PyTorch's modules carry (see layers.py).
  const ACTIVATIONS = {
    elu: ({ alpha }) => (x) => (x > 0 ? x : alpha * Math.expm1(x)),
    relu: () => (x) => (x > 0 ? x : 0),
    tanh: () => Math.tanh,
    softplus: ({ beta, threshold }) => (x) => (x * beta > threshold ? x : Math.log1p(Math.exp(x * beta)) / beta),
    sigmoid: () => sigmoid,
    leaky_relu: ({ slope }) => (x) => (x > 0 ? x : x * slope),
    gelu: ({ approximate }) => approximate === "tanh"
      ? (x) => 0.5 * x * (1 + Math.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
      : (x) => 0.5 * x * (1 + erf(x * Math.SQRT1_2)),
    silu: () => (x) => x * sigmoid(x),
  };

  const sizeOf = (shape) => shape.reduce((a, b) => a * b, 1);

  // y = W x + b with W stored (out, in) row-major: each output is a dot product over one
  // contiguous row, in four running sums so that the JIT can overlap the multiplications.
  function linearLayer(spec, inShape) {
    const inSize = sizeOf(inShape);
    if (spec.in !== inSize) throw new Error(`linear layer takes ${spec.in} inputs, gets ${inSize}`);
    const weight = float32FromBase64(spec.weight);
    const bias = float32FromBase64(spec.bias);
    const nIn = spec.in;
    const nOut = spec.out;
    const output = new Float32Array(nOut);
    return {
      shape: [nOut],
      forward(x) {
        for (let j = 0, row = 0; j < nOut; j++, row += nIn) {
          let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
          let i = 0;
          for (; i + 3 < nIn; i += 4) {
            s0 += weight[row + i] * x[i];
            s1 += weight[row + i + 1] * x[i + 1];
            s2 += weight[row + i + 2] * x[i + 2];
            s3 += weight[row + i + 3] * x[i + 3];
          }
          for (; i < nIn; i++) s0 += weight[row + i] * x[i];
          output[j] = bias[j] + ((s0 + s1) + (s2 + s3));
        }
        return output;
      },
    };
  }

  function activationLayer(spec, inShape) {
    const make = ACTIVATIONS[spec.name];
    if (!make) throw new Error(`unknown activation ${spec.name}`);
    const f = make(spec);
    return {
      shape: inShape,
      forward(x) {
        for (let i = 0; i < x.length; i++) x[i] = f(x[i]);
        return x;
      },
    };
  }

  // The same values seen with another shape; one -1 stands for the size the others leave.
  function reshapeLayer(spec, inShape) {
    const size = sizeOf(inShape);
    const known = sizeOf(spec.shape.filter((n) => n !== -1));
    const shape = spec.shape.map((n) => (n === -1 ? size / known : n));
    if (sizeOf(shape) !== size || !shape.every(Number.isInteger)) {
      throw new Error(`cannot reshape ${inShape.join("×")} into ${spec.shape.join("×")}`);
    }
    return { shape, forward: (x) => x };
  }

  // Transposed convolution, (C_in, H, W) -> (C_out, H_out, W_out) with
  //     H_out = (H - 1) stride - 2 padding + kernel + output_padding        (and so for W).
  // Input pixel (iy, ix) reaches output pixel (oy, ox) = (iy stride - padding + ky, ix stride - padding + kx)
  // through kernel tap (ky, kx). Computed as a gather: each output value is its bias plus, for every tap
  // that lands on it, the dot product over input channels of that tap's weights and the input pixel.
  // For contiguous dot products the input is first laid out pixel by pixel, (H, W, C_in), and the
  // weights once, at load, as (C_out, kh, kw, C_in).
  function convTranspose2dLayer(spec, inShape) {
    const [cIn, hIn, wIn] = inShape;
    if (inShape.length !== 3 || cIn !== spec.in_channels) {
      throw new Error(`transposed convolution takes ${spec.in_channels} channels of (C, H, W), gets ${inShape.join("×")}`);
    }
    const cOut = spec.out_channels;
    const [kh, kw] = spec.kernel, [sh, sw] = spec.stride, [ph, pw] = spec.padding;
    const hOut = (hIn - 1) * sh - 2 * ph + kh + spec.output_padding[0];
    const wOut = (wIn - 1) * sw - 2 * pw + kw + spec.output_padding[1];
    if (hOut < 1 || wOut < 1) throw new Error(`transposed convolution of ${hIn}×${wIn} gives ${hOut}×${wOut}`);
    const weight = tapsLast(float32FromBase64(spec.weight), cIn, cOut, kh * kw);
    const bias = float32FromBase64(spec.bias);
    const rows = tapsOnto(hOut, hIn, kh, sh, ph); // rows[oy]: the [ky, iy] pairs with iy sh - ph + ky = oy
    const columns = tapsOnto(wOut, wIn, kw, sw, pw);
    const pixels = new Float32Array(hIn * wIn * cIn);
    const output = new Float32Array(cOut * hOut * wOut);
    return {
      shape: [cOut, hOut, wOut],
      forward(x) {
        for (let c = 0; c < cIn; c++) { // (C_in, H, W) -> (H, W, C_in)
          for (let p = 0, q = c * hIn * wIn; p < hIn * wIn; p++, q++) pixels[p * cIn + c] = x[q];
        }
        let o = 0;
        for (let co = 0; co < cOut; co++) {
          const filter = co * kh * kw * cIn;
          for (let oy = 0; oy < hOut; oy++) {
            for (let ox = 0; ox < wOut; ox++, o++) {
              let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
              for (const [ky, iy] of rows[oy]) {
                for (const [kx, ix] of columns[ox]) {
                  const w = filter + (ky * kw + kx) * cIn;
                  const p = (iy * wIn + ix) * cIn;
                  let c = 0;
                  for (; c + 3 < cIn; c += 4) {
                    s0 += weight[w + c] * pixels[p + c];
                    s1 += weight[w + c + 1] * pixels[p + c + 1];
                    s2 += weight[w + c + 2] * pixels[p + c + 2];
                    s3 += weight[w + c + 3] * pixels[p + c + 3];
                  }
                  for (; c < cIn; c++) s0 += weight[w + c] * pixels[p + c];
                }
              }
              output[o] = bias[co] + ((s0 + s1) + (s2 + s3));
            }
          }
        }
        return output;
      },
    };
  }

  // For each output position along one axis, the [tap, input position] pairs that reach it.
  function tapsOnto(outSize, inSize, kernel, stride, pad) {
    return Array.from({ length: outSize }, (_, out) => {
      const pairs = [];
      for (let k = 0; k < kernel; k++) {
        const i = (out + pad - k) / stride;
        if (Number.isInteger(i) && i >= 0 && i < inSize) pairs.push([k, i]);
      }
      return pairs;
    });
  }

  // Weights (C_in, C_out, taps) -> (C_out, taps, C_in).
  function tapsLast(weight, cIn, cOut, taps) {
    const out = new Float32Array(weight.length);
    for (let ci = 0; ci < cIn; ci++) {
      for (let co = 0; co < cOut; co++) {
        for (let t = 0; t < taps; t++) out[(co * taps + t) * cIn + ci] = weight[(ci * cOut + co) * taps + t];
      }
    }
    return out;
  }

  const LAYER_BUILDERS = {
    linear: linearLayer,
    activation: activationLayer,
    reshape: reshapeLayer,
    conv_transpose2d: convTranspose2dLayer,
  };

  class Decoder {
    constructor(specs, latentSize) {
      this.latentSize = latentSize;
      this.input = new Float32Array(latentSize); // a copy of z, so that an in-place first layer leaves z alone
      this.layers = [];
      let shape = [latentSize];
      for (const spec of specs) {
        const build = LAYER_BUILDERS[spec.type];
        if (!build) throw new Error(`unknown layer type ${spec.type}`);
        const layer = build(spec, shape);
        this.layers.push(layer);
        shape = layer.shape;
      }
      this.outputShape = shape;
      this.outputSize = sizeOf(shape);
    }

    // Pixel means for one code z, flat in (C, H, W) order; the returned array is reused by the next call.
    decode(z) {
      this.input.set(z);
      let h = this.input;
      for (const layer of this.layers) h = layer.forward(h);
      return h;
    }
  }

  // Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9).
  function inverseNormalCdf(p) {
    const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
    const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    const tail = (q) => (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
      ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
    if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
    const q = p - 0.5;
    const r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
      (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }

  return { Decoder, bytesFromBase64, float32FromBase64, erf, inverseNormalCdf };
})();
