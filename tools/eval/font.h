/* tools/eval/font.h - tiny built-in bitmap font for plot text (no font library).
 * Glyphs are CHEX_FONT_W x CHEX_FONT_H cells, advance W + 1; rows 0-6 are the
 * cap height, rows 7-8 descenders. Read-only data, thread-safe. */
#ifndef CHEX_EVAL_FONT_H
#define CHEX_EVAL_FONT_H

#define CHEX_FONT_W 5
#define CHEX_FONT_H 9

/* 1 if pixel (x, y) of character c is ink. Printable ASCII has glyphs; any
 * other byte draws as a hollow box. */
int chex_font_pixel(char c, int x, int y);

/* Width in pixels of s drawn at an integer scale (no trailing gap). */
int chex_font_text_width(const char *s, int scale);

#endif
