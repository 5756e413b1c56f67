// Renders Adaptive Card JSON files to PNG with the official `adaptivecards` renderer in headless Chromium.
//
//   node tests/render/render.mjs <json-dir> <png-dir>
//
// Every `<name>.json` in <json-dir> becomes `<png-dir>/<name>.png`: parsed with a SerializationContext (its
// events are the parse errors and warnings), checked with validateProperties(), rendered with the Teams-like
// HostConfig in hostconfig.json (or the file $RENDER_HOSTCONFIG names) into a 500 px wide frame, and
// screenshotted. Nothing is served or fetched: the page is set from a string, the renderer and its CSS are
// injected from node_modules, and every request is aborted (and reported).
//
// Teams' extensions: the renderer does not know `Chart.*` elements and parses their `fallback` in their place
// (UnknownElementType, "Fallback will be used if present"); each such event is checked against the element that
// was actually parsed and reported under `fallbacks`, not as an error. A chart without a fallback is an error.
// The root `msteams` property is not part of the renderer's schema and is ignored.
//
// Prints one JSON line per card on stdout, {name, errors, warnings, fallbacks, png, width, height}, then one
// {"summary": ...} line. Exit status: 0 all cards parsed and rendered without error; 1 some card had an error;
// 2 the run itself failed (bad arguments, no Chromium, no renderer).
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const BUNDLE = join(HERE, "node_modules", "adaptivecards", "dist", "adaptivecards.min.js");
const BUNDLE_CSS = join(HERE, "node_modules", "adaptivecards", "dist", "adaptivecards.css");
const TEAMS_CSS = join(HERE, "teams.css");
const HOST_CONFIG = JSON.parse(readFileSync(process.env.RENDER_HOSTCONFIG || join(HERE, "hostconfig.json"), "utf8"));
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>cards</title></head>
<body><div id="stage"><div id="card-frame"></div></div></body></html>`;

function fail(message) {
    process.stderr.write(`render.mjs: ${message}\n`);
    process.exit(2);
}

// Runs in the page: parse, validate, render one card into #card-frame; returns {errors, warnings, fallbacks}.
function renderInPage({ card: json, hostConfig }) {
    const AC = window.AdaptiveCards;
    const errors = [];
    const warnings = [];
    const fallbacks = [];
    const frame = document.getElementById("card-frame");
    frame.replaceChildren();
    const eventName = (event) => AC.ValidationEvent[event] ?? String(event);
    const MINOR = new Set([AC.ValidationEvent.Hint, AC.ValidationEvent.Deprecated]);

    const card = new AC.AdaptiveCard();
    card.hostConfig = new AC.HostConfig(hostConfig);
    const context = new AC.SerializationContext();
    const charts = []; // a Chart.* source and what the renderer parsed in its place, in parse order
    context.onParseElement = (element, source) => {
        if (source && typeof source.type === "string" && source.type.startsWith("Chart.")) {
            charts.push({ type: source.type, parsedAs: element.getJsonTypeName(),
                expected: source.fallback && typeof source.fallback === "object" ? source.fallback.type : undefined });
        }
    };
    try {
        card.parse(json, context);
    } catch (e) {
        errors.push(`parse threw: ${e && e.stack || e}`);
        return { errors, warnings, fallbacks };
    }
    let chartIndex = 0;
    for (let i = 0; i < context.eventCount; i++) {
        const e = context.getEventAt(i);
        const line = `${eventName(e.event)}: ${e.message}`;
        const chart = /^Unknown element type "(Chart\.[^"]*)"/.exec(e.message || "");
        if (e.event === AC.ValidationEvent.UnknownElementType && chart) {
            const parsed = charts[chartIndex++];
            if (parsed && parsed.type === chart[1] && parsed.expected && parsed.parsedAs === parsed.expected) {
                fallbacks.push({ type: chart[1], renderedAs: parsed.parsedAs, event: line });
            } else {
                errors.push(`${line} (no usable fallback: the chart was dropped)`);
            }
        } else if (MINOR.has(e.event)) {
            warnings.push(line);
        } else {
            errors.push(line);
        }
    }
    for (const e of card.validateProperties().validationEvents) {
        const line = `${eventName(e.event)} (validation): ${e.message}`;
        (MINOR.has(e.event) ? warnings : errors).push(line);
    }

    let element;
    try {
        element = card.render();
    } catch (e) {
        errors.push(`render threw: ${e && e.stack || e}`);
    }
    if (!element) {
        errors.push("render() returned no element");
        return { errors, warnings, fallbacks };
    }
    frame.appendChild(element);
    card.updateLayout();
    if (!frame.innerText.trim()) errors.push("the rendered card shows no text");

    // Layout problems a person would see: text cut off with an ellipsis, anything wider than the frame.
    const right = frame.getBoundingClientRect().right;
    for (const node of frame.querySelectorAll("*")) {
        const style = getComputedStyle(node);
        const text = (node.innerText || "").trim().replace(/\s+/g, " ").slice(0, 80);
        if (style.textOverflow === "ellipsis" && node.scrollWidth > node.clientWidth + 1 && text) {
            warnings.push(`layout: text cut off: "${text}"`);
        }
        if (node.children.length === 0 && text && node.getBoundingClientRect().right > right + 1) {
            warnings.push(`layout: wider than the card: "${text}"`);
        }
    }
    return { errors, warnings, fallbacks };
}

async function main() {
    const [jsonDir, pngDir] = process.argv.slice(2);
    if (!jsonDir || !pngDir) fail("usage: node tests/render/render.mjs <json-dir> <png-dir>");
    if (!existsSync(CHROMIUM)) fail(`no Chromium at ${CHROMIUM}: run \`make test\` (it installs Debian's chromium)`);
    if (!existsSync(BUNDLE)) fail(`no renderer at ${BUNDLE}: run \`make test\` (it runs npm ci --prefix tests/render)`);
    const files = readdirSync(jsonDir).filter((f) => f.endsWith(".json")).sort();
    if (!files.length) fail(`no .json files in ${jsonDir}`);
    mkdirSync(pngDir, { recursive: true });

    let chromium;
    try {
        ({ chromium } = await import("playwright-core"));
    } catch (e) {
        fail(`playwright-core is not installed (${e.message}): run \`make test\``);
    }
    const started = Date.now();
    const profile = mkdtempSync(join(tmpdir(), "card-render-"));
    const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 700, height: 900 },
        deviceScaleFactor: 1,
    });
    let failed = 0;
    try {
        const page = context.pages()[0] || await context.newPage();
        const blocked = [];
        let pageErrors = [];
        await context.route("**/*", (route) => { blocked.push(route.request().url()); return route.abort(); });
        page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
        page.on("console", (m) => { if (m.type() === "error") pageErrors.push(`console error: ${m.text()}`); });
        await page.setContent(PAGE);
        await page.addStyleTag({ path: BUNDLE_CSS });
        await page.addStyleTag({ path: TEAMS_CSS });
        await page.addScriptTag({ path: BUNDLE });
        if (!await page.evaluate(() => typeof window.AdaptiveCards?.AdaptiveCard === "function")) {
            fail("the adaptivecards bundle did not define window.AdaptiveCards");
        }
        // The renderer checks `lang` with one shared /^[a-z]{2,3}$/gi and exec(): a global regex keeps its
        // lastIndex, so every second card with a valid "lang" gets 'Invalid value "da" for property "lang"'
        // (microsoft/AdaptiveCards#9145). Same pattern without the g flag: an invalid lang is still an error.
        await page.evaluate((family) => {
            // Buttons and inputs inherit the card's font (teams.css), as in Teams.
            document.getElementById("card-frame").style.fontFamily = family;
            const property = window.AdaptiveCards.CardElement.langProperty;
            if (property?.regEx?.global) {
                property.regEx = new RegExp(property.regEx.source, property.regEx.flags.replace("g", ""));
            }
        }, HOST_CONFIG.fontTypes.default.fontFamily);
        const frame = page.locator("#card-frame");
        for (const file of files) {
            const name = basename(file, ".json");
            const png = resolve(pngDir, `${name}.png`);
            blocked.length = 0;
            pageErrors = [];
            let result;
            try {
                const card = JSON.parse(readFileSync(join(jsonDir, file), "utf8"));
                result = await page.evaluate(renderInPage, { card, hostConfig: HOST_CONFIG });
                await page.evaluate(() => document.fonts.ready);
                rmSync(png, { force: true });
                await frame.screenshot({ path: png, animations: "disabled" });
            } catch (e) {
                result = { errors: [...(result?.errors || []), `failed: ${e.message}`],
                    warnings: result?.warnings || [], fallbacks: result?.fallbacks || [] };
            }
            result.errors.push(...pageErrors);
            result.warnings.push(...blocked.map((url) => `network request blocked: ${url}`));
            const box = await frame.boundingBox().catch(() => null);
            if (result.errors.length) failed++;
            process.stdout.write(JSON.stringify({ name, ...result, png: existsSync(png) ? png : null,
                width: box ? Math.round(box.width) : null, height: box ? Math.round(box.height) : null }) + "\n");
        }
    } finally {
        await context.close();
        rmSync(profile, { recursive: true, force: true });
    }
    const ms = Date.now() - started;
    process.stdout.write(JSON.stringify({ summary: { cards: files.length, failed, ms } }) + "\n");
    process.stderr.write(`render.mjs: ${files.length} cards in ${(ms / 1000).toFixed(1)} s, ${failed} with errors\n`);
    process.exitCode = failed ? 1 : 0;
}

main().catch((e) => fail(e && e.stack || String(e)));
