/**
 * Server-rendered HTML for the web admin. Every interpolated value is escaped unless it is
 * already Html (built by this template tag), so output escaping cannot be forgotten at a call
 * site. Pages load nothing but the admin's own stylesheet: no scripts, no inline styles, no
 * outside requests, which the Content-Security-Policy then enforces.
 */
export class Html {
  constructor(readonly value: string) {}
  toString(): string { return this.value; }
}

type Part = Html | string | number | boolean | null | undefined | readonly Part[];

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"'`]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function render(part: Part): string {
  if (part === null || part === undefined || part === false) return "";
  if (part instanceof Html) return part.value;
  if (Array.isArray(part)) return part.map(render).join("");
  return escapeHtml(String(part));
}

export function html(strings: TemplateStringsArray, ...parts: Part[]): Html {
  let out = strings[0]!;
  for (let i = 0; i < parts.length; i++) out += render(parts[i]!) + strings[i + 1]!;
  return new Html(out);
}

export const CONTENT_SECURITY_POLICY =
  "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export const STYLESHEET = `
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dee7; --bg: #f6f7f9; --accent: #2456c7; --bad: #b42318; --ok: #157f3b; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { background: #1d2330; color: #fff; padding: .6rem 1.2rem; display: flex; gap: 1.2rem; align-items: center; flex-wrap: wrap; }
header a { color: #dfe6f5; text-decoration: none; }
header a[aria-current] { color: #fff; font-weight: 600; border-bottom: 2px solid #fff; }
header .who { margin-left: auto; color: #b9c2d3; }
header form { display: inline; }
main { max-width: 72rem; margin: 1.2rem auto; padding: 0 1.2rem; }
h1 { font-size: 1.4rem; margin: .2rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.6rem 0 .6rem; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef1f6; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); gap: .8rem; }
.card { background: #fff; border: 1px solid var(--line); padding: .7rem .9rem; }
.card .label { color: var(--muted); font-size: .85rem; }
.card .value { font-size: 1.3rem; font-weight: 600; }
form.inline { display: inline; }
fieldset { border: 1px solid var(--line); background: #fff; padding: .8rem; margin: 0 0 1rem; }
label { display: inline-block; margin: 0 .8rem .4rem 0; }
input[type=text], input[type=password], input[type=number], input[type=search] { padding: .35rem .5rem; border: 1px solid #b8c0cc; border-radius: 3px; font: inherit; }
button { padding: .35rem .8rem; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 3px; font: inherit; cursor: pointer; }
button.danger { background: var(--bad); border-color: var(--bad); }
button.plain { background: #fff; color: var(--accent); }
.flash { padding: .6rem .9rem; margin-bottom: 1rem; border: 1px solid; background: #fff; }
.flash.ok { border-color: var(--ok); color: var(--ok); }
.flash.error { border-color: var(--bad); color: var(--bad); }
.muted { color: var(--muted); }
.warn { color: var(--bad); font-weight: 600; }
pre { background: #fff; border: 1px solid var(--line); padding: .8rem; overflow: auto; }
.login { max-width: 24rem; margin: 4rem auto; background: #fff; border: 1px solid var(--line); padding: 1.4rem; }
.login label { display: block; margin-bottom: .8rem; }
.login input { width: 100%; margin-top: .2rem; }
`;

export interface Flash { kind: "ok" | "error"; text: string }

const NAV: ReadonlyArray<[string, string]> = [
  ["/admin", "Status"], ["/admin/users", "Users"], ["/admin/rooms", "Group chats"],
  ["/admin/uploads", "Uploads"], ["/admin/reports", "Abuse reports"], ["/admin/config", "Configuration"],
];

/** A whole page for a logged-in admin: navigation, the flash message, the content. */
export function page(opts: { title: string; path: string; admin: string; csrf: string; flash?: Flash | undefined; body: Html }): Html {
  return document(opts.title, html`
<header>
  <strong>Parley</strong>
  ${NAV.map(([href, label]) => html`<a href="${href}"${opts.path === href ? html` aria-current="page"` : ""}>${label}</a>`)}
  <span class="who">${opts.admin}</span>
  <form method="post" action="/admin/logout">${csrfField(opts.csrf)}<button class="plain" type="submit">Log out</button></form>
</header>
<main>
  <h1>${opts.title}</h1>
  ${opts.flash ? html`<p class="flash ${opts.flash.kind}" role="status">${opts.flash.text}</p>` : ""}
  ${opts.body}
</main>`);
}

export function document(title: string, body: Html): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${title} · Parley admin</title>
<link rel="stylesheet" href="/admin/admin.css">
</head>
<body>${body}</body>
</html>`;
}

export const csrfField = (token: string) => html`<input type="hidden" name="csrf" value="${token}">`;

/** A one-button form posting `fields` to `action`. */
export function button(action: string, csrf: string, label: string, fields: Record<string, string>, danger = false): Html {
  return html`<form class="inline" method="post" action="${action}">${csrfField(csrf)}${Object.entries(fields).map(([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`)}<button type="submit"${danger ? html` class="danger"` : ""}>${label}</button></form>`;
}
