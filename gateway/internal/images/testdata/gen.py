"""Writes the images package's test images and the PIL reference of the CLIP
resize (shortest edge 112, bicubic, centre crop 112). Run once; the outputs
are committed."""
import math

from PIL import Image

w, h = 160, 120
img = Image.new("RGB", (w, h))
px = img.load()
for y in range(h):
    for x in range(w):
        px[x, y] = (int(127 + 127 * math.sin(x / 7.0)), (x * 3 + y * 2) % 256, 255 if (x // 20 + y // 20) % 2 else 30)
img.save("photo.png")
img.save("photo.webp", lossless=True)
img.save("photo.gif")
img.save("photo.jpg", quality=95)

short = 112
nw, nh = int(short * w / h), short
resized = img.resize((nw, nh), resample=Image.BICUBIC)
left, top = (nw - 112) // 2, (nh - 112) // 2
resized.crop((left, top, left + 112, top + 112)).save("photo_clip112.png")
