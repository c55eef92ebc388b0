#!/usr/bin/env node
// Headless-Chromium check of the Temporal Web UI for one catalog workflow:
//   1. the workflow list filtered by the CatalogSource search attribute shows the workflow;
//   2. the workflow's "User Metadata" tab shows its static summary and details.
// Usage: node check.mjs --help
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs as parseCli } from 'node:util';

import { launchChromium } from './chromium.mjs';

const USAGE = `usage: node check.mjs --ui <url> --namespace <ns> --source <source> --workflow-id <id>
                      --expect-summary <text> [--expect-details <text>]...
                      [--screenshots <dir>] [--chromium <path>] [--timeout <seconds>]

  --ui              Temporal Web UI base URL, e.g. http://127.0.0.1:8233
  --namespace       Temporal namespace (default: default)
  --source          value of the CatalogSource search attribute to filter the list by
  --workflow-id     the workflow that must appear in the filtered list
  --expect-summary  substring of the workflow's static summary
  --expect-details  substring of its static details (repeatable)
  --screenshots     directory for webui-list.png / webui-workflow.png (and webui-failure.png)
  --chromium        Chromium binary (default: $CHROMIUM or /usr/bin/chromium)
  --timeout         seconds to wait for the workflow to show up in the list (default: 60)

Expected texts are matched against the text the UI renders: markdown markers (**, __,
backticks, leading #, -, *, >) are dropped from the expectation, curly quotes, dashes and
ellipses are folded back to ASCII, and whitespace is collapsed on both sides.
Exit status: 0 all checks passed, 1 a check failed, 2 usage error.`;

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  let values;
  try {
    ({ values } = parseCli({
      args: argv,
      options: {
        help: { type: 'boolean', short: 'h' },
        ui: { type: 'string' },
        namespace: { type: 'string', default: 'default' },
        source: { type: 'string' },
        'workflow-id': { type: 'string' },
        'expect-summary': { type: 'string' },
        'expect-details': { type: 'string', multiple: true, default: [] },
        screenshots: { type: 'string' },
        chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
        timeout: { type: 'string', default: '60' },
      },
    }));
  } catch (err) {
    usageError(err.message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  for (const flag of ['ui', 'source', 'workflow-id', 'expect-summary']) {
    if (!values[flag]) usageError(`--${flag} is required`);
  }
  const opts = {
    ui: values.ui.replace(/\/+$/, ''),
    namespace: values.namespace,
    source: values.source,
    workflowId: values['workflow-id'],
    expectSummary: values['expect-summary'],
    expectDetails: values['expect-details'],
    screenshots: values.screenshots,
    chromium: values.chromium,
    timeout: Number(values.timeout),
  };
  if (!(opts.timeout > 0)) usageError('--timeout must be a positive number of seconds');
  return opts;
}

function usageError(message) {
  console.error(`check.mjs: ${message}\n\n${USAGE}`);
  process.exit(2);
}

// ---------------------------------------------------------------- text matching

// What the UI's markdown renderer shows for typographic characters, folded back to ASCII.
function normalizeRendered(text) {
  return text
    .normalize('NFKC')
    .replace(/[\u201C\u201D\u201E\u201F\u00AB\u00BB]/g, '"')
    .replace(/[\u2018\u2019\u201A\u201B]/g, "'")
    .replace(/\u2014/g, '---')
    .replace(/\u2013/g, '--')
    .replace(/\u2026/g, '...')
    .replace(/\s+/g, ' ')
    .trim();
}

// An expectation written as (a piece of) the markdown source, reduced to its visible text.
function normalizeExpected(text) {
  const visible = text
    .split('\n')
    .map((line) => line.replace(/^\s*(#{1,6}\s+|[-*+]\s+|>\s*)/, ''))
    .join('\n')
    .replace(/\*\*|__|`/g, '');
  return normalizeRendered(visible);
}

const quote = (s) => JSON.stringify(s);

class CheckFailed extends Error {}

// ---------------------------------------------------------------- checks

const opts = parseArgs(process.argv.slice(2));
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
const ok = (message) => console.log(`ok    ${message}`);
const shotDir = opts.screenshots ? resolve(opts.screenshots) : undefined;
if (shotDir) mkdirSync(shotDir, { recursive: true });

const listQuery = `CatalogSource="${opts.source}"`;
const listUrl = `${opts.ui}/namespaces/${encodeURIComponent(opts.namespace)}/workflows?query=${encodeURIComponent(listQuery)}`;
const workflowUrl = `${opts.ui}/namespaces/${encodeURIComponent(opts.namespace)}/workflows/${encodeURIComponent(opts.workflowId)}`;

let browser;
let page;
const pageErrors = [];
let exitCode = 0;

try {
  browser = await launchChromium(opts.chromium);
  const context = await browser.newContext({
    viewport: { width: 1440, height: 900 },
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  // Show the CatalogSource search attribute as a list column (the UI keeps its column choice
  // per namespace in localStorage), so the list screenshot shows what the list is filtered by.
  await context.addInitScript(
    ({ namespace }) => {
      const key = 'namespace-workflow-table-columns';
      const columns = {};
      columns[namespace] = ['Status', 'Workflow ID', 'Type', 'CatalogSource', 'Start', 'End'].map(
        (label) => ({ label }),
      );
      try {
        window.localStorage.setItem(key, JSON.stringify(columns));
      } catch {
        // sandboxed frames (the markdown renderer) have no localStorage: nothing to set there
      }
    },
    { namespace: opts.namespace },
  );
  page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(String(err)));

  const uiVersion = await page.request
    .get(`${opts.ui}/api/v1/settings`)
    .then(async (r) => (r.ok() ? (await r.json()).Version : undefined))
    .catch(() => undefined);

  // -- 1. the filtered workflow list ------------------------------------------------------
  const rows = page.locator('[data-testid="workflows-summary-configurable-table-row"]');
  const row = rows.filter({
    has: page.getByRole('link', { name: opts.workflowId, exact: true }),
  });
  const deadline = Date.now() + opts.timeout * 1000;
  let loads = 0;
  for (;;) {
    if (loads++ === 0) await page.goto(listUrl, { waitUntil: 'load' });
    else await page.reload({ waitUntil: 'load' });
    const remaining = deadline - Date.now();
    try {
      await row.first().waitFor({ state: 'visible', timeout: Math.max(1000, Math.min(5000, remaining)) });
      break;
    } catch {
      if (Date.now() >= deadline) {
        const shown = await rows.count().catch(() => 0);
        throw new CheckFailed(
          `workflow list: no row for workflow ${quote(opts.workflowId)} within ${opts.timeout} s ` +
            `(${loads} page loads; the list filtered by ${listQuery} shows ${shown} row(s))\n  url: ${listUrl}`,
        );
      }
    }
  }
  const rowCount = await rows.count();
  ok(`list: ${listQuery} shows workflow ${quote(opts.workflowId)} (${rowCount} row(s), ${loads} page load(s), ${elapsed()})`);

  // The CatalogSource column (enabled above) must show the source in our row.
  const headers = (await page.locator('thead th').allInnerTexts()).map((t) => t.trim());
  const sourceColumn = headers.indexOf('CatalogSource');
  if (sourceColumn < 0) {
    throw new CheckFailed(`workflow list: no CatalogSource column (columns: ${headers.filter(Boolean).join(', ')})`);
  }
  const sourceCell = (await row.first().locator('td').nth(sourceColumn).innerText()).trim();
  if (sourceCell !== opts.source) {
    throw new CheckFailed(`workflow list: the row's CatalogSource column shows ${quote(sourceCell)}, expected ${quote(opts.source)}`);
  }
  ok(`list: the row's CatalogSource column shows ${quote(sourceCell)}`);

  // Temporal UI 2.x does not show a summary in the workflow list: ListWorkflowExecutions does
  // not return user metadata and the column chooser offers no Summary column. Should a later UI
  // add one, check it there; the summary is checked on the workflow page either way.
  const summaryColumn = headers.findIndex((h) => /^summary$/i.test(h));
  if (summaryColumn >= 0) {
    const cell = normalizeRendered(await row.first().locator('td').nth(summaryColumn).innerText());
    if (!cell.includes(normalizeExpected(opts.expectSummary))) {
      throw new CheckFailed(
        `workflow list: the row's Summary column shows ${quote(cell)}, expected it to contain ${quote(opts.expectSummary)}`,
      );
    }
    ok(`list: the row's Summary column shows ${quote(opts.expectSummary)}`);
  } else {
    console.log(
      `skip  list: the workflow list of Temporal UI ${uiVersion ?? '(unknown version)'} has no Summary column; ` +
        'the summary is checked on the workflow page',
    );
  }

  if (shotDir) {
    const path = join(shotDir, 'webui-list.png');
    await page.screenshot({ path });
    ok(`screenshot ${path}`);
  }

  // -- 2. the workflow page ---------------------------------------------------------------
  // /workflows/<id> redirects to the latest run: /workflows/<id>/<run-id>/timeline (or /history).
  await page.goto(workflowUrl, { waitUntil: 'load' });
  const runPath = new RegExp(`/workflows/${escapeRegExp(encodeURIComponent(opts.workflowId))}/([^/?#]+)/`);
  try {
    await page.waitForURL(runPath, { timeout: 30_000 });
  } catch {
    const text = normalizeRendered(await page.locator('main').innerText().catch(() => ''));
    throw new CheckFailed(
      `workflow page: ${workflowUrl} did not redirect to a run of the workflow (now at ${page.url()}); ` +
        `the page says: ${quote(text.slice(0, 300))}`,
    );
  }
  const runId = decodeURIComponent(page.url().match(runPath)[1]);
  const runUrl = `${workflowUrl}/${encodeURIComponent(runId)}`;
  await page.locator('#user-metadata-tab').click({ timeout: 30_000 });
  await page.waitForURL(`${runUrl}/user-metadata`, { timeout: 30_000 });
  await page.locator('[data-testid="user-metadata"]').waitFor({ state: 'visible', timeout: 30_000 });
  ok(`workflow page: ${runUrl}/user-metadata (run ${runId}, ${elapsed()})`);

  // Summary and details are markdown rendered by the UI's /render endpoint in two iframes.
  await expectInFrame('#user-metadata-summary', 'summary', [opts.expectSummary]);
  await expectInFrame('#user-metadata-details', 'details', opts.expectDetails);

  if (shotDir) {
    const path = join(shotDir, 'webui-workflow.png');
    await page.screenshot({ path, fullPage: true });
    ok(`screenshot ${path}`);
  }
  ok(`all checks passed in ${elapsed()}`);
} catch (err) {
  exitCode = 1;
  const message = err instanceof CheckFailed ? err.message : `unexpected error: ${err?.stack ?? err}`;
  console.error(`FAIL  ${message}`);
  if (pageErrors.length) console.error(`      page errors: ${pageErrors.slice(-3).join(' | ')}`);
  if (page) {
    const path = join(shotDir ?? tmpdir(), 'webui-failure.png');
    try {
      await page.screenshot({ path, fullPage: true });
      console.error(`      screenshot of the page at failure: ${path} (${page.url()})`);
    } catch (shotErr) {
      console.error(`      could not save a failure screenshot: ${shotErr.message}`);
    }
  }
} finally {
  await browser?.close().catch(() => {});
}
process.exit(exitCode);

// Waits until the markdown rendered in the iframe shows every expected text: up to 20 s for
// the iframe to render anything at all, then at most 3 s more for the expected texts.
async function expectInFrame(selector, what, expected) {
  if (!expected.length) return;
  const frame = page.frameLocator(selector);
  const iframe = page.locator(selector);
  if ((await iframe.count()) === 0) {
    throw new CheckFailed(`workflow page: no ${what} panel (no ${selector}); does the workflow have static ${what}?`);
  }
  const wanted = expected.map((text) => ({ text, norm: normalizeExpected(text) }));
  let rendered = '';
  let missing = wanted;
  let visible = false;
  let until = Date.now() + 20_000;
  let settled = false;
  for (;;) {
    rendered = normalizeRendered(await frame.locator('body').innerText({ timeout: 5_000 }).catch(() => ''));
    visible = await iframe.isVisible();
    missing = wanted.filter((w) => !rendered.includes(w.norm));
    if (!missing.length && visible) break;
    if (rendered && !settled) {
      settled = true;
      until = Math.min(until, Date.now() + 3_000);
    }
    if (Date.now() >= until) break;
    await page.waitForTimeout(250);
  }
  if (missing.length || !visible) {
    const src = await iframe.getAttribute('src').catch(() => null);
    const raw = src ? (new URL(src, opts.ui).searchParams.get('content') ?? '') : '';
    const lines = missing.map(
      (w) =>
        `  expected ${quote(w.text)} (as rendered text: ${quote(w.norm)})` +
        (raw.includes(w.text) ? ' - present in the markdown source, but not in the rendered text' : ''),
    );
    if (!visible) lines.push(`  the ${what} panel (${selector}) is not visible`);
    throw new CheckFailed(
      `workflow page: the ${what} panel does not show what was expected\n${lines.join('\n')}\n` +
        `  the ${what} panel shows: ${quote(rendered)}`,
    );
  }
  for (const w of wanted) ok(`${what}: shows ${quote(w.text)}`);
}

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
