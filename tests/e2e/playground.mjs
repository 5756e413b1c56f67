// Drives Microsoft 365 Agents Playground in headless Chromium through the bot's main scenario, as a person would:
//
//   node tests/e2e/playground.mjs --url http://127.0.0.1:PORT/ --out DIR --import-cmd '["python", "-m", ...]'
//
// 1. personal chat: the welcome card (the Playground installs the bot when the page opens);
// 2. `balance`: the balance card;
// 3. Add funds on that card: the form (Input.Number + note), Continue, the confirmation card, Add: the receipt;
// 4. Show balance, Recharge settings: the auto-recharge form (toggle + two Input.Number), Save: settings saved;
// 5. the Finance channel: `@Credits Bot subscribe` as a new post, the bot's answer in its thread;
// 6. the usage import (--import-cmd, run here so that it happens while the page is open) debits the credits
//    below the trigger: the auto-recharge alert card arrives in the channel, sent proactively by the notifier;
// 7. back in the personal chat, `balance` again: the card shows the recharge.
//
// A screenshot per step goes to DIR/NN-step.png (DIR/NN-step-FAILED.png when a step fails; later steps are not
// run: each needs the one before). Input.Number renders as a Fluent spin button that keeps a typed value only once
// focus leaves it, so every number is typed, then Tab, then read back. Nothing but 127.0.0.1/localhost is fetched:
// every other request (the Playground's web fonts and animations from a CDN) is aborted and listed.
//
// stdout: one JSON line per step {step, ok, ms, screenshot, detail | error}, then {"summary": {...}}.
// Exit status: 0 every step passed; 1 a step failed; 2 the run itself failed (arguments, Chromium, watchdog).
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"];
const STEP_TIMEOUT = 15_000;      // any one thing to appear in the page
const ALERT_TIMEOUT = 30_000;     // the alert, after the import returned
const IMPORT_TIMEOUT = 60_000;
const TOTAL_TIMEOUT = 120_000;    // the whole run: then exit 2 whatever happens

// Names from m365agentsplayground.yml and the bot's English texts (bot/i18n.py).
const BOT_NAME = "Credits Bot";
const CHANNEL = "Contoso Finance - Finance";   // team name - channel name, as the Playground labels it
const PERSONAL = "Personal Chat";
const FUNDS = "100";        // added through the card
const RECHARGE = "50";      // "Add this amount"
const TRIGGER = "90";       // "When the balance is below": the import takes the balance below it
const money = (amount) => `$${Number(amount).toFixed(2)}`;

function fail(message) {
    process.stderr.write(`playground.mjs: ${message}\n`);
    process.stdout.write(JSON.stringify({ summary: { ok: false, error: message } }) + "\n");
    process.exit(2);
}

function parseArgs(argv) {
    const args = {};
    for (let i = 0; i < argv.length; i += 2) {
        const key = argv[i];
        if (!["--url", "--out", "--import-cmd"].includes(key) || argv[i + 1] === undefined) {
            fail(`usage: node playground.mjs --url URL --out DIR --import-cmd JSON-ARRAY (got ${key})`);
        }
        args[key.slice(2)] = argv[i + 1];
    }
    if (!args.url || !args.out || !args["import-cmd"]) fail("--url, --out and --import-cmd are required");
    let command;
    try {
        command = JSON.parse(args["import-cmd"]);
    } catch (e) {
        fail(`--import-cmd is not JSON: ${e.message}`);
    }
    if (!Array.isArray(command) || !command.length || !command.every((a) => typeof a === "string")) {
        fail("--import-cmd must be a JSON array of strings");
    }
    return { url: args.url, out: resolve(args.out), importCommand: command };
}

function run(argv, timeout) {
    return new Promise((done) => {
        execFile(argv[0], argv.slice(1), { timeout, maxBuffer: 4 << 20, env: process.env },
            (error, stdout, stderr) => done({
                code: error ? (typeof error.code === "number" ? error.code : null) : 0,
                signal: error?.signal || null, stdout: String(stdout), stderr: String(stderr),
            }));
    });
}

async function main() {
    const { url, out, importCommand } = parseArgs(process.argv.slice(2));
    if (!existsSync(CHROMIUM)) fail(`no Chromium at ${CHROMIUM}: run \`make test\` (it installs Debian's chromium)`);
    let chromium;
    try {
        ({ chromium } = await import("playwright-core"));
    } catch (e) {
        fail(`playwright-core is not installed (${e.message}): run \`make test\` (npm ci --prefix tests/e2e)`);
    }
    mkdirSync(out, { recursive: true });
    const started = Date.now();
    const watchdog = setTimeout(() => fail(`the run took longer than ${TOTAL_TIMEOUT / 1000} s`), TOTAL_TIMEOUT);

    const profile = mkdtempSync(join(tmpdir(), "playground-e2e-"));
    const context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1400, height: 1000 },
        deviceScaleFactor: 1, locale: "en-US", timezoneId: "UTC",
    });
    const blocked = new Set();
    const pageErrors = [];
    let consoleErrors = 0;
    const results = [];
    const summary = { ok: false };
    let number = 0;
    try {
        await context.route("**/*", (route) => {
            const target = new URL(route.request().url());
            if (["127.0.0.1", "localhost", "[::1]"].includes(target.hostname) || target.protocol === "data:") {
                return route.continue();
            }
            blocked.add(`${target.protocol}//${target.host}`);
            return route.abort();
        });
        const page = context.pages()[0] || await context.newPage();
        page.setDefaultTimeout(STEP_TIMEOUT);
        page.on("pageerror", (e) => pageErrors.push(String(e.message).slice(0, 300)));
        page.on("console", (m) => { if (m.type() === "error") consoleErrors++; });

        // --- helpers over the Playground's UI (roles and labels; its CSS class names are generated) ------------
        const cards = page.locator(".ac-adaptiveCard");
        const card = (text) => cards.filter({ hasText: text }).last();
        const composers = page.locator('[contenteditable="true"][role="textbox"]');
        const visible = (locator, timeout = STEP_TIMEOUT) => locator.waitFor({ state: "visible", timeout });
        const cardText = async (locator) => (await locator.innerText()).replace(/\s+/g, " ").trim();
        const shot = async (name, focus) => {
            const path = join(out, `${String(++number).padStart(2, "0")}-${name}.png`);
            rmSync(path, { force: true });
            if (focus) await focus.scrollIntoViewIfNeeded().catch(() => {});
            await page.screenshot({ path, animations: "disabled" });
            return path;
        };
        const expectIn = (text, wanted, what) => {
            for (const w of wanted) {
                if (!text.includes(w)) throw new Error(`${what} does not show "${w}": ${text.slice(0, 400)}`);
            }
        };
        const say = async (text) => {      // personal chat: type, Enter
            const box = composers.last();
            await box.click();
            await box.fill(text);
            await box.press("Enter");
        };
        const setNumber = async (scope, label, value) => {
            const spin = scope.getByRole("spinbutton", { name: label });
            await spin.click();
            await spin.fill(value);
            await spin.press("Tab");       // the spin button commits its value on blur
            const kept = await spin.inputValue();
            if (kept !== value) throw new Error(`the spin button "${label}" holds "${kept}" after blur, not "${value}"`);
        };
        const waitForCount = async (locator, atLeast, timeout = STEP_TIMEOUT) => {
            const deadline = Date.now() + timeout;
            while (await locator.count() < atLeast) {
                if (Date.now() > deadline) throw new Error(`waited ${timeout / 1000} s for ${atLeast} of ${locator}`);
                await page.waitForTimeout(100);
            }
        };

        let focus = null;
        const step = async (name, body) => {
            const t0 = Date.now();
            process.stderr.write(`playground.mjs: ${name}...\n`);
            focus = null;
            try {
                const detail = await body();
                const screenshot = await shot(name, focus);
                results.push({ step: name, ok: true, ms: Date.now() - t0, screenshot, detail: detail ?? {} });
            } catch (e) {
                const screenshot = await shot(`${name}-FAILED`).catch(() => null);
                // what the bot last said, from the Playground's log panel (its newest entries are at the end)
                const log = await page.evaluate(() => {
                    const text = document.body.innerText;
                    return text.slice(text.lastIndexOf("Log Panel") + 1);
                }).catch(() => "");
                results.push({ step: name, ok: false, ms: Date.now() - t0, screenshot,
                    error: String(e && e.message || e).replace(/\x1b\[[0-9;]*m/g, "").split("\n").slice(0, 6).join("\n"),
                    playground_log_tail: log.split("\n").map((l) => l.trim()).filter(Boolean).slice(-14) });
                throw e;
            } finally {
                process.stdout.write(JSON.stringify(results[results.length - 1]) + "\n");
            }
        };

        // --- the scenario -------------------------------------------------------------------------------------
        await step("personal-welcome", async () => {
            await page.goto(url);
            await visible(page.getByRole("treeitem", { name: PERSONAL }));
            focus = card("Welcome to Communications Credits");
            await visible(focus);
            return { text: await cardText(focus) };
        });

        await step("balance-card", async () => {
            await say("balance");
            focus = cards.filter({ hasText: "Recharge settings" }).filter({ hasText: "Add funds" }).last();
            await visible(focus);
            const text = await cardText(focus);
            expectIn(text, ["Balance", money(0), "Auto-recharge", "Off"], "the balance card");
            // both install events (installationUpdate, conversationUpdate) have been answered by now
            return { text, welcome_cards: await cards.filter({ hasText: "Welcome to Communications Credits" }).count() };
        });

        await step("add-funds-form", async () => {
            const balance = cards.filter({ hasText: "Recharge settings" }).filter({ hasText: "Add funds" }).last();
            await balance.getByRole("button", { name: "Add funds" }).click();
            focus = card("Amount (USD)");
            await visible(focus.getByRole("spinbutton", { name: /Amount/ }));
            await setNumber(focus, /Amount/, FUNDS);
            await focus.getByRole("textbox", { name: /Note/ }).fill("E2E top-up");
            return { text: await cardText(focus) };
        });

        await step("add-funds-confirm", async () => {
            await card("Amount (USD)").getByRole("button", { name: "Continue" }).click();
            focus = card(`Add ${money(FUNDS)}?`);
            await visible(focus);
            const text = await cardText(focus);
            expectIn(text, ["E2E top-up", `Balance after ${money(FUNDS)}`], "the confirmation card");
            return { text };
        });

        await step("funds-added", async () => {
            await card(`Add ${money(FUNDS)}?`).getByRole("button", { name: `Add ${money(FUNDS)}` }).click();
            focus = card(`${money(FUNDS)} added`);
            await visible(focus);
            const text = await cardText(focus);
            expectIn(text, ["Added by Alex Wilber", "E2E top-up"], "the receipt");
            return { text };
        });

        await step("recharge-form", async () => {
            await card(`${money(FUNDS)} added`).getByRole("button", { name: "Show balance" }).click();
            const balance = cards.filter({ hasText: "Recharge settings" }).filter({ hasText: money(FUNDS) }).last();
            await visible(balance);
            await balance.getByRole("button", { name: "Recharge settings" }).click();
            focus = card("Edit recharge settings");
            const toggle = focus.getByRole("checkbox", { name: "Turn on auto-recharge" });
            await visible(toggle);
            await toggle.check();
            await setNumber(focus, /Add this amount/, RECHARGE);
            await setNumber(focus, /When the balance is below/, TRIGGER);
            if (!await toggle.isChecked()) throw new Error("the auto-recharge toggle is not checked");
            return { text: await cardText(focus) };
        });

        await step("recharge-saved", async () => {
            await card("Edit recharge settings").getByRole("button", { name: "Save changes" }).click();
            focus = card("Recharge settings saved");
            await visible(focus);
            const text = await cardText(focus);
            expectIn(text, ["Auto-recharge On", `Add this amount ${money(RECHARGE)}`, money(TRIGGER)],
                "the saved settings card");
            return { text };
        });

        await step("channel-subscribed", async () => {
            await page.getByRole("treeitem", { name: CHANNEL }).click();
            await visible(card("Welcome to Communications Credits"));   // the bot was installed in the team
            const post = composers.first();                                // "Start a new post"
            await post.click();
            await post.pressSequentially("@Cre", { delay: 30 });
            await page.getByRole("menuitem", { name: BOT_NAME }).click();  // the mention picker
            await post.pressSequentially(" subscribe", { delay: 10 });
            await page.getByRole("button", { name: "Post", exact: true }).click();
            focus = page.getByText("This conversation will get these alerts").last();
            await visible(focus);
            return { text: (await focus.innerText()).trim() };
        });

        await step("channel-alert", async () => {
            const imported = await run(importCommand, IMPORT_TIMEOUT);
            const returned = Date.now();
            summary.import = imported;
            if (imported.code !== 0) {
                throw new Error(`the import exited with ${imported.code ?? imported.signal}: ${imported.stderr.trim()}`
                    + ` ${imported.stdout.trim()}`.slice(0, 1500));
            }
            focus = card("Auto-recharge added");
            await visible(focus, ALERT_TIMEOUT);
            const text = await cardText(focus);
            expectIn(text, [`Auto-recharge added ${money(RECHARGE)}`], "the alert card");
            summary.alert_text = text;
            return { text, import_stdout: imported.stdout, ms_after_import: Date.now() - returned };
        });

        await step("balance-after", async () => {
            await page.getByRole("treeitem", { name: PERSONAL }).click();
            const balances = cards.filter({ hasText: "Recharge settings" }).filter({ hasText: "Add funds" });
            await visible(composers.last());
            const before = await balances.count();
            await say("balance");
            await waitForCount(balances, before + 1);
            focus = balances.last();
            const text = await cardText(focus);
            expectIn(text, ["Auto-recharge", "On", "Last recharge"], "the balance card");
            return { text };
        });
        summary.ok = true;
    } catch (e) {
        if (!results.length || results[results.length - 1].ok) {  // not a step's own failure: report it
            summary.error = String(e && e.stack || e).slice(0, 2000);
        }
    } finally {
        const page = context.pages()[0];
        if (page) {
            const text = await page.evaluate(() => document.body.innerText).catch(() => "");
            // the Playground's log panel: "<activity type> <HTTP status>" for every exchange with the bot
            summary.playground_errors = [...new Set(text.match(/\b(?:message|invoke|conversationUpdate|installationUpdate|messageReaction|messageUpdate)\s+[45]\d\d\b/g) || [])];
        }
        clearTimeout(watchdog);
        await context.close().catch(() => {});
        rmSync(profile, { recursive: true, force: true });
    }
    Object.assign(summary, {
        steps: results.length, failed: results.filter((r) => !r.ok).length, ms: Date.now() - started,
        blocked: [...blocked].sort(), console_errors: consoleErrors, page_errors: pageErrors.slice(0, 20),
        amounts: { funds: FUNDS, recharge: RECHARGE, trigger: TRIGGER },
    });
    process.stdout.write(JSON.stringify({ summary }) + "\n");
    process.stderr.write(`playground.mjs: ${results.filter((r) => r.ok).length}/${results.length} steps passed in `
        + `${(summary.ms / 1000).toFixed(1)} s\n`);
    process.exitCode = summary.ok ? 0 : 1;
}

main().catch((e) => fail(e && e.stack || String(e)));
