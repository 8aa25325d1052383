/* report/font.h - tiny built-in bitmap font burned into Secondary Captures and
 * drawn on chex evaluate's plots.
 * Glyphs are CHEX_RFONT_W x CHEX_RFONT_H cells, advance W + 1; rows 0-6 are the
 * cap height, rows 7-8 descenders. Read-only data, thread-safe. */
#ifndef CHEX_REPORT_FONT_H
#define CHEX_REPORT_FONT_H

#define CHEX_RFONT_W 5
#define CHEX_RFONT_H 9

/* 1 if pixel (x, y) of character c is ink. Printable ASCII has glyphs; any
 * other byte draws as a hollow box. */
int chex_report_font_pixel(char c, int x, int y);

/* Width in pixels of s drawn at an integer scale (no trailing gap). */
int chex_report_font_text_width(const char *s, int scale);

#endif
