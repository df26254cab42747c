package vnc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"math/bits"
	"time"

	"github.com/jezek/xgb"
	"github.com/jezek/xgb/xproto"
	"golang.org/x/image/draw"

	"github.com/berth-dev/berth/internal/agentproto"
)

// screenshotTimeout bounds a screenshot when ctx has no earlier deadline.
const screenshotTimeout = 20 * time.Second

// Screenshot implements agent.Screenshotter: it reads the session's root
// window over X11 with the session's cookie, scales it down to fit maxW ×
// maxH (0: no bound; never up) keeping its aspect, and encodes it as PNG or
// JPEG.
func (d *Driver) Screenshot(ctx context.Context, id string, maxW, maxH int, format string) ([]agentproto.Image, error) {
	if format == "" {
		format = agentproto.FormatPNG
	}
	if format != agentproto.FormatPNG && format != agentproto.FormatJPEG {
		return nil, fmt.Errorf("unsupported image format %q", format)
	}
	d.mu.Lock()
	s, ok := d.sessions[id]
	var rec record
	if ok && !s.deleting && s.state == agentproto.StateReady {
		rec = s.rec
	} else {
		ok = false
	}
	d.mu.Unlock()
	if !ok {
		return nil, ErrNotFound
	}
	cookie, err := rec.xCookie()
	if err != nil {
		return nil, fmt.Errorf("screenshot: %w", err)
	}
	deadline := time.Now().Add(screenshotTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	pid := rec.ServerPID
	if isConsole(&rec) {
		pid = 0 // the console's X server is not ours
	}
	c, err := xConnect(ctx, rec.Display, cookie, pid, deadline)
	if err != nil {
		return nil, fmt.Errorf("screenshot: %w", err)
	}
	defer c.Close()
	img, err := grab(c)
	if err != nil {
		return nil, fmt.Errorf("screenshot: %w", err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var out image.Image = img
	if w, h := fit(img.Bounds().Dx(), img.Bounds().Dy(), maxW, maxH); w != img.Bounds().Dx() || h != img.Bounds().Dy() {
		dst := image.NewRGBA(image.Rect(0, 0, w, h))
		draw.ApproxBiLinear.Scale(dst, dst.Bounds(), img, img.Bounds(), draw.Src, nil)
		out = dst
	}
	var buf bytes.Buffer
	if format == agentproto.FormatPNG {
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, out)
	} else {
		err = jpeg.Encode(&buf, out, &jpeg.Options{Quality: 85})
	}
	if err != nil {
		return nil, fmt.Errorf("encode screenshot: %w", err)
	}
	return []agentproto.Image{{
		Format:       format,
		Data:         buf.Bytes(),
		CreationTime: now,
		Primary:      true,
	}}, nil
}

// fit returns the size of a w × h image scaled down to fit maxW × maxH (0:
// no bound), keeping its aspect; never larger than w × h, never empty.
func fit(w, h, maxW, maxH int) (int, int) {
	scale := 1.0
	if maxW > 0 && w > maxW {
		scale = float64(maxW) / float64(w)
	}
	if maxH > 0 && h > maxH {
		scale = min(scale, float64(maxH)/float64(h))
	}
	if scale >= 1 {
		return w, h
	}
	nw, nh := int(float64(w)*scale), int(float64(h)*scale)
	if maxW > 0 && nw > maxW {
		nw = maxW
	}
	if maxH > 0 && nh > maxH {
		nh = maxH
	}
	return max(nw, 1), max(nh, 1)
}

// grab reads the first screen's root window into an RGBA image, in strips so
// that no reply gets too large.
func grab(c *xgb.Conn) (*image.RGBA, error) {
	setup := xproto.Setup(c)
	if setup == nil || len(setup.Roots) == 0 {
		return nil, errors.New("the X server has no screen")
	}
	scr := setup.Roots[0]
	var vis *xproto.VisualInfo
	for _, dep := range scr.AllowedDepths {
		for i := range dep.Visuals {
			if dep.Visuals[i].VisualId == scr.RootVisual {
				vis = &dep.Visuals[i]
			}
		}
	}
	if vis == nil {
		return nil, errors.New("root visual not found")
	}
	bpp, pad := 0, 0
	for _, f := range setup.PixmapFormats {
		if f.Depth == scr.RootDepth {
			bpp, pad = int(f.BitsPerPixel), int(f.ScanlinePad)
		}
	}
	if bpp != 16 && bpp != 24 && bpp != 32 || pad%8 != 0 || pad == 0 {
		return nil, fmt.Errorf("unsupported pixel format (%d bits per pixel)", bpp)
	}
	w, h := int(scr.WidthInPixels), int(scr.HeightInPixels)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	conv := newConverter(vis, bpp, setup.ImageByteOrder == xproto.ImageOrderMSBFirst)
	stride := ((w*bpp + pad - 1) / pad) * pad / 8
	strip := max(1, min(h, (4<<20)/max(stride, 1)))
	for y := 0; y < h; y += strip {
		rows := min(strip, h-y)
		r, err := xproto.GetImage(c, xproto.ImageFormatZPixmap, xproto.Drawable(scr.Root), 0, int16(y), uint16(w), uint16(rows), 0xffffffff).Reply()
		if err != nil {
			return nil, fmt.Errorf("get image: %w", err)
		}
		if len(r.Data) < stride*rows {
			return nil, errors.New("get image: short reply")
		}
		for row := 0; row < rows; row++ {
			conv.row(img.Pix[(y+row)*img.Stride:], r.Data[row*stride:], w)
		}
	}
	return img, nil
}

// converter turns rows of X pixels into RGBA.
type converter struct {
	bpp       int
	msb       bool
	masks     [3]uint32
	shifts    [3]int
	widths    [3]int
	fastBGRX  bool // 32 bpp, LSB first, 8-bit channels at 16/8/0
	bytesPerP int
}

func newConverter(v *xproto.VisualInfo, bpp int, msb bool) *converter {
	c := &converter{bpp: bpp, msb: msb, masks: [3]uint32{v.RedMask, v.GreenMask, v.BlueMask}, bytesPerP: bpp / 8}
	for i, m := range c.masks {
		if m != 0 {
			c.shifts[i] = bits.TrailingZeros32(m)
			c.widths[i] = bits.OnesCount32(m)
		}
	}
	c.fastBGRX = bpp == 32 && !msb && v.RedMask == 0xff0000 && v.GreenMask == 0xff00 && v.BlueMask == 0xff
	return c
}

// row converts w pixels of src into dst (RGBA, 4 bytes a pixel).
func (c *converter) row(dst, src []byte, w int) {
	if c.fastBGRX {
		for x := 0; x < w; x++ {
			s := src[x*4 : x*4+4 : x*4+4]
			d := dst[x*4 : x*4+4 : x*4+4]
			d[0], d[1], d[2], d[3] = s[2], s[1], s[0], 0xff
		}
		return
	}
	n := c.bytesPerP
	for x := 0; x < w; x++ {
		var p uint32
		s := src[x*n : x*n+n]
		if c.msb {
			for _, b := range s {
				p = p<<8 | uint32(b)
			}
		} else {
			for i := n - 1; i >= 0; i-- {
				p = p<<8 | uint32(s[i])
			}
		}
		d := dst[x*4 : x*4+4]
		for i := 0; i < 3; i++ {
			d[i] = channel(p, c.masks[i], c.shifts[i], c.widths[i])
		}
		d[3] = 0xff
	}
}

// channel extracts a colour channel and scales it to 8 bits.
func channel(p, mask uint32, shift, width int) byte {
	if width == 0 {
		return 0
	}
	v := (p & mask) >> shift
	if width >= 8 {
		return byte(v >> (width - 8))
	}
	maxV := uint32(1)<<width - 1
	return byte(v * 255 / maxV)
}
