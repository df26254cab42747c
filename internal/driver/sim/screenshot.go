package sim

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
)

// maxSide bounds the simulated screen, whatever ScreenWidth/ScreenHeight say.
const maxSide = 8192

// Screenshot implements agent.Screenshotter: it draws a test pattern of the
// screen size (scaled down to fit maxW × maxH, never up) and encodes it as PNG
// or JPEG. The pattern shows colour bars, a grey ramp and a block whose
// position depends on the session ID, so that two sessions' images differ.
func (d *Driver) Screenshot(ctx context.Context, id string, maxW, maxH int, format string) ([]agentproto.Image, error) {
	d.mu.Lock()
	_, ok := d.sessions[id]
	d.mu.Unlock()
	if !ok {
		return nil, ErrNotFound
	}
	if format != agentproto.FormatPNG && format != agentproto.FormatJPEG {
		return nil, fmt.Errorf("unsupported image format %q", format)
	}
	sw, sh := d.screenSize()
	w, h := fit(sw, sh, maxW, maxH)
	img := pattern(w, h, id, d.Noise)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	var err error
	if format == agentproto.FormatPNG {
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img)
	} else {
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80})
	}
	if err != nil {
		return nil, fmt.Errorf("encode screenshot: %w", err)
	}
	return []agentproto.Image{{
		Format:       format,
		Data:         buf.Bytes(),
		CreationTime: time.Now().UTC().Truncate(time.Millisecond),
		Primary:      true,
	}}, nil
}

func (d *Driver) screenSize() (int, int) {
	w, h := d.ScreenWidth, d.ScreenHeight
	if w <= 0 || h <= 0 {
		w, h = DefaultScreenWidth, DefaultScreenHeight
	}
	return min(w, maxSide), min(h, maxSide)
}

// fit scales w × h down, keeping the aspect ratio, to fit maxW × maxH (0: no
// bound on that side).
func fit(w, h, maxW, maxH int) (int, int) {
	if maxW > 0 && w > maxW {
		h = max(1, h*maxW/w)
		w = maxW
	}
	if maxH > 0 && h > maxH {
		w = max(1, w*maxH/h)
		h = maxH
	}
	return w, h
}

var bars = []color.RGBA{
	{192, 192, 192, 255}, {192, 192, 0, 255}, {0, 192, 192, 255}, {0, 192, 0, 255},
	{192, 0, 192, 255}, {192, 0, 0, 255}, {0, 0, 192, 255}, {16, 16, 16, 255},
}

// pattern draws the test image.
func pattern(w, h int, id string, noise bool) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	hs := fnv.New64a()
	hs.Write([]byte(id))
	seed := hs.Sum64()
	bx, by := int(seed%7)*w/8, int(seed/7%5)*h/6 // the session's block
	bw, bh := max(1, w/8), max(1, h/6)
	var rng *rand.Rand
	if noise {
		rng = rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	}
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		for x := 0; x < w; x++ {
			var c color.RGBA
			switch {
			case x >= bx && x < bx+bw && y >= by && y < by+bh:
				if (x/16+y/16)%2 == 0 {
					c = color.RGBA{255, 255, 255, 255}
				} else {
					c = color.RGBA{0, 0, 0, 255}
				}
			case y < h*2/3:
				c = bars[x*len(bars)/w]
			default:
				v := uint8(x * 255 / max(1, w-1))
				c = color.RGBA{v, v, v, 255}
			}
			if rng != nil {
				r := rng.Uint32()
				c.R = c.R&^1 | uint8(r)&1
				c.G = c.G&^1 | uint8(r>>8)&1
				c.B = c.B&^1 | uint8(r>>16)&1
			}
			p := row[4*x : 4*x+4 : 4*x+4]
			p[0], p[1], p[2], p[3] = c.R, c.G, c.B, 255
		}
	}
	return img
}
