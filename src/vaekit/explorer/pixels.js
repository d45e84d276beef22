"use strict";
// Examples as pixels: flat values in (C, H, W) order, drawn into ImageData. One channel is grey,
// three are RGB, four RGBA shown over white (as the PNG figures and GIFs show them: images.to_images);
// any other count is shown channel by channel side by side, in grey.
// Canvases stay at the image's own size and are enlarged by CSS (image-rendering: pixelated).

const VaekitPixels = (() => {
  const GAP_COLOUR = [48, 54, 61]; // between the cells of a strip or a grid

  function imageWriter([channels, height, width]) {
    const direct = channels === 1 || channels === 3 || channels === 4;
    const tile = direct ? { w: width, h: height } : { w: channels * width + channels - 1, h: height };
    const size = height * width;

    // One example (values[offset...], times scale to reach 0..255) into target at (left, top).
    function write(target, values, offset, scale, left, top) {
      const out = target.data;
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const p = offset + y * width + x;
          if (direct) {
            const q = 4 * ((top + y) * target.width + left + x);
            if (channels === 1) {
              out[q] = out[q + 1] = out[q + 2] = values[p] * scale;
            } else {
              const alpha = channels === 4 ? values[p + 3 * size] * scale / 255 : 1, white = 255 * (1 - alpha);
              out[q] = values[p] * scale * alpha + white;
              out[q + 1] = values[p + size] * scale * alpha + white;
              out[q + 2] = values[p + 2 * size] * scale * alpha + white;
            }
            out[q + 3] = 255;
          } else {
            for (let c = 0; c < channels; c++) {
              const q = 4 * ((top + y) * target.width + left + c * (width + 1) + x);
              out[q] = out[q + 1] = out[q + 2] = values[p + c * size] * scale;
              out[q + 3] = 255;
            }
          }
        }
      }
    }

    // A canvas showing one example, sized to it.
    function paint(canvas, values, offset, scale) {
      if (canvas.width !== tile.w || canvas.height !== tile.h) [canvas.width, canvas.height] = [tile.w, tile.h];
      const ctx = canvas.getContext("2d");
      const image = ctx.createImageData(tile.w, tile.h);
      write(image, values, offset, scale, 0, 0);
      ctx.putImageData(image, 0, 0);
    }

    // An empty ImageData for cells of tiles, filled with the gap colour.
    function sheet(ctx, w, h) {
      const image = ctx.createImageData(w, h);
      for (let q = 0; q < image.data.length; q += 4) {
        image.data.set(GAP_COLOUR, q);
        image.data[q + 3] = 255;
      }
      return image;
    }

    return { tile, write, paint, sheet };
  }

  return { imageWriter };
})();
