#!/usr/bin/env node
// Renders a captured terminal transcript (text with ANSI escapes, e.g. from `script -q -c ...`)
// into a dark terminal-styled page and screenshots it to a PNG (for README screenshots).
// Usage: node terminal.mjs --help
import { readFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs as parseCli } from 'node:util';

import { launchChromium } from './chromium.mjs';

const USAGE = `usage: node terminal.mjs --input <file> --output <png> [--title <text>] [--chromium <path>]

  --input     transcript with ANSI escapes ("-" reads stdin)
  --output    PNG to write
  --title     text in the window's title bar (default: the input file name)
  --chromium  Chromium binary (default: $CHROMIUM or /usr/bin/chromium)

The transcript is replayed on a virtual screen, so the picture shows what the terminal
finally showed: \\r returns to the line start and later text overwrites, ESC[K / ESC[1K /
ESC[2K erase (part of) the line, ESC[nA/B/C/D/G move the cursor, ESC[J erases below,
SGR sets bold/dim/italic/underline/inverse and 16, 256 and RGB colours; other escapes
(OSC titles, cursor show/hide, ...) are dropped.`;

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  let values;
  try {
    ({ values } = parseCli({
      args: argv,
      options: {
        help: { type: 'boolean', short: 'h' },
        input: { type: 'string' },
        output: { type: 'string' },
        title: { type: 'string' },
        chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
      },
    }));
  } catch (err) {
    usageError(err.message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (!values.input) usageError('--input is required');
  if (!values.output) usageError('--output is required');
  const title = values.title ?? (values.input === '-' ? 'terminal' : values.input.split('/').pop());
  return { ...values, title };
}

function usageError(message) {
  console.error(`terminal.mjs: ${message}\n\n${USAGE}`);
  process.exit(2);
}

// ---------------------------------------------------------------- the virtual screen

const PALETTE = [
  '#1d1f21', '#f0525b', '#7cc36e', '#e5c07b', '#61afef', '#c678dd', '#4fc1d6', '#d0d4dc',
  '#5c6370', '#ff7a82', '#98e08a', '#f5d48f', '#82c4ff', '#dc96ee', '#72dcee', '#ffffff',
];
const DEFAULT_FG = '#d0d4dc';
const DEFAULT_BG = '#16181d';

function color256(n) {
  if (n < 16) return PALETTE[n];
  if (n < 232) {
    const level = (v) => (v === 0 ? 0 : 55 + v * 40);
    const i = n - 16;
    return rgb(level(Math.floor(i / 36)), level(Math.floor(i / 6) % 6), level(i % 6));
  }
  const g = 8 + (n - 232) * 10;
  return rgb(g, g, g);
}

function rgb(r, g, b) {
  return `#${[r, g, b].map((v) => Math.max(0, Math.min(255, v)).toString(16).padStart(2, '0')).join('')}`;
}

const PLAIN = Object.freeze({ fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false });

function applySgr(style, params) {
  const s = { ...style };
  const p = params.length ? params : [0];
  for (let i = 0; i < p.length; i++) {
    const n = p[i];
    if (n === 0) Object.assign(s, PLAIN);
    else if (n === 1) s.bold = true;
    else if (n === 2) s.dim = true;
    else if (n === 3) s.italic = true;
    else if (n === 4) s.underline = true;
    else if (n === 7) s.inverse = true;
    else if (n === 22) s.bold = s.dim = false;
    else if (n === 23) s.italic = false;
    else if (n === 24) s.underline = false;
    else if (n === 27) s.inverse = false;
    else if (n >= 30 && n <= 37) s.fg = PALETTE[n - 30];
    else if (n === 39) s.fg = null;
    else if (n >= 40 && n <= 47) s.bg = PALETTE[n - 40];
    else if (n === 49) s.bg = null;
    else if (n >= 90 && n <= 97) s.fg = PALETTE[n - 90 + 8];
    else if (n >= 100 && n <= 107) s.bg = PALETTE[n - 100 + 8];
    else if (n === 38 || n === 48) {
      let c = null;
      if (p[i + 1] === 5 && i + 2 < p.length) {
        c = color256(p[i + 2]);
        i += 2;
      } else if (p[i + 1] === 2 && i + 4 < p.length) {
        c = rgb(p[i + 2], p[i + 3], p[i + 4]);
        i += 4;
      }
      if (c) s[n === 38 ? 'fg' : 'bg'] = c;
    }
  }
  return s;
}

// Replays the transcript; returns the final screen as lines of { ch, style } cells.
function replay(text) {
  const lines = [[]];
  let row = 0;
  let col = 0;
  let style = PLAIN;
  const line = () => {
    while (lines.length <= row) lines.push([]);
    return lines[row];
  };
  const put = (ch) => {
    const l = line();
    while (l.length < col) l.push({ ch: ' ', style: PLAIN });
    l[col] = { ch, style };
    col++;
  };
  const chars = Array.from(text.replace(/\r\n/g, '\n'));
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i];
    if (ch === '\n') {
      row++;
      col = 0;
      line();
    } else if (ch === '\r') {
      col = 0;
    } else if (ch === '\b') {
      col = Math.max(0, col - 1);
    } else if (ch === '\t') {
      col = (Math.floor(col / 8) + 1) * 8;
    } else if (ch === '\x1b') {
      const next = chars[i + 1];
      if (next === '[') {
        // CSI: parameter bytes 0x30-0x3F, intermediate bytes 0x20-0x2F, final byte 0x40-0x7E
        let j = i + 2;
        let params = '';
        while (j < chars.length && /[0-?]/.test(chars[j])) params += chars[j++];
        while (j < chars.length && /[ -/]/.test(chars[j])) j++;
        const final = chars[j];
        i = j;
        if (params.startsWith('?') || params.startsWith('>') || params.startsWith('=')) continue;
        const nums = params === '' ? [] : params.split(/[;:]/).map((v) => (v === '' ? 0 : Number(v)));
        const n = nums[0] || 1;
        const l = line();
        switch (final) {
          case 'm':
            style = applySgr(style, nums);
            break;
          case 'K': {
            const mode = nums[0] || 0;
            if (mode === 0) l.length = Math.min(l.length, col);
            else if (mode === 1) for (let k = 0; k <= col && k < l.length; k++) l[k] = { ch: ' ', style: PLAIN };
            else lines[row] = [];
            break;
          }
          case 'J': {
            const mode = nums[0] || 0;
            if (mode === 0) {
              l.length = Math.min(l.length, col);
              lines.length = row + 1;
            } else if (mode === 2 || mode === 3) {
              lines.length = 0;
              lines.push([]);
              row = 0;
              col = 0;
            }
            break;
          }
          case 'A':
            row = Math.max(0, row - n);
            break;
          case 'B':
          case 'E':
            row += n;
            if (final === 'E') col = 0;
            line();
            break;
          case 'F':
            row = Math.max(0, row - n);
            col = 0;
            break;
          case 'C':
            col += n;
            break;
          case 'D':
            col = Math.max(0, col - n);
            break;
          case 'G':
            col = Math.max(0, n - 1);
            break;
          case 'H':
          case 'f':
            row = Math.max(0, (nums[0] || 1) - 1);
            col = Math.max(0, (nums[1] || 1) - 1);
            line();
            break;
          default:
            break; // other CSI sequences do not change what is shown
        }
      } else if (next === ']' || next === 'P' || next === '_' || next === '^') {
        // OSC / DCS / APC / PM: skip to BEL or ST (ESC \)
        let j = i + 2;
        while (j < chars.length && chars[j] !== '\x07' && !(chars[j] === '\x1b' && chars[j + 1] === '\\')) j++;
        i = chars[j] === '\x07' ? j : j + 1;
      } else {
        i += 1; // two-character escape (ESC 7, ESC 8, ESC =, ...): ignored
      }
    } else if (ch < ' ' || ch === '\x7f') {
      // other control characters (BEL, ...) show nothing
    } else {
      put(ch);
    }
  }
  while (lines.length > 1 && lines[lines.length - 1].every((c) => c.ch === ' ')) lines.pop();
  return lines;
}

// ---------------------------------------------------------------- HTML

const escapeHtml = (s) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

function css(style) {
  let fg = style.fg ?? DEFAULT_FG;
  let bg = style.bg;
  if (style.inverse) [fg, bg] = [bg ?? DEFAULT_BG, fg];
  const rules = [];
  if (fg !== DEFAULT_FG) rules.push(`color:${fg}`);
  if (bg) rules.push(`background:${bg}`);
  if (style.bold) rules.push('font-weight:bold');
  if (style.dim) rules.push('opacity:.6');
  if (style.italic) rules.push('font-style:italic');
  if (style.underline) rules.push('text-decoration:underline');
  return rules.join(';');
}

function renderLine(cells) {
  let html = '';
  let run = '';
  let runCss = null;
  const flush = () => {
    if (!run) return;
    html += runCss ? `<span style="${runCss}">${escapeHtml(run)}</span>` : escapeHtml(run);
    run = '';
  };
  for (const cell of cells) {
    const c = css(cell.style);
    if (c !== runCss) {
      flush();
      runCss = c;
    }
    run += cell.ch;
  }
  flush();
  return html;
}

function page(lines, title) {
  const cols = Math.max(60, ...lines.map((l) => l.length));
  const body = lines.map((l) => `<div class="line">${renderLine(l) || ' '}</div>`).join('');
  return `<!doctype html>
<html><head><meta charset="utf-8"><style>
  html, body { margin: 0; background: transparent; }
  body { padding: 24px; display: inline-block; }
  .window { background: ${DEFAULT_BG}; border-radius: 10px; overflow: hidden;
            box-shadow: 0 10px 30px rgba(0,0,0,.35), 0 0 0 1px rgba(255,255,255,.06); }
  .bar { height: 34px; background: #2a2d35; display: flex; align-items: center; padding: 0 14px;
         position: relative; font: 13px 'DejaVu Sans', sans-serif; color: #9aa0ab; }
  .dot { width: 12px; height: 12px; border-radius: 50%; margin-right: 8px; }
  .title { position: absolute; left: 0; right: 0; text-align: center; pointer-events: none; }
  .screen { padding: 14px 18px 16px; color: ${DEFAULT_FG};
            font: 14px/1.45 'DejaVu Sans Mono', 'Liberation Mono', monospace; white-space: pre;
            width: ${cols}ch; }
  .line { min-height: 1.45em; }
</style></head><body><div class="window">
  <div class="bar"><span class="dot" style="background:#ff5f57"></span><span class="dot" style="background:#febc2e"></span><span class="dot" style="background:#28c840"></span><span class="title">${escapeHtml(title)}</span></div>
  <div class="screen">${body}</div>
</div></body></html>`;
}

// ---------------------------------------------------------------- main

const opts = parseArgs(process.argv.slice(2));
// util-linux `script` wraps its log file in "Script started on ..." / "Script done on ..." lines.
const text = readFileSync(opts.input === '-' ? 0 : opts.input, 'utf8')
  .replace(/^Script started on [^\n]*\n/, '')
  .replace(/\n?Script done on [^\n]*\n?$/, '');
const lines = replay(text);
const output = resolve(opts.output);
mkdirSync(dirname(output), { recursive: true });

const browser = await launchChromium(opts.chromium);
try {
  const ctx = await browser.newContext({ viewport: { width: 800, height: 600 }, deviceScaleFactor: 2 });
  const tab = await ctx.newPage();
  await tab.setContent(page(lines, opts.title), { waitUntil: 'load' });
  await tab.locator('body').screenshot({ path: output, omitBackground: true });
  console.log(`wrote ${output} (${lines.length} lines)`);
} catch (err) {
  console.error(`terminal.mjs: ${err?.stack ?? err}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
