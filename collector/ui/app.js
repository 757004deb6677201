// tracia-collector's web UI: plain JavaScript, no dependencies, no build step.
//
// Views (hash routes): #/traces?filters, #/trace/{traceId}/{spanId}, #/sessions,
// #/sessions/{sessionId}, #/prompts, #/prompts/{slug}/{version}.
//
// Span content is untrusted: every value from the API goes into the page as a text node
// or a property (textContent, value, href built from "#/" + encodeURIComponent), never
// as markup. The Content-Security-Policy forbids inline scripts besides.
"use strict";

(function () {
  const app = document.getElementById("app");
  const nav = document.getElementById("nav");

  // ---------------------------------------------------------------- DOM helpers

  // An element: properties (className, href, value, dataset, on<event>, ...) and
  // children (nodes; strings and numbers become text nodes; arrays are flattened).
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (/html/i.test(key)) throw new Error("markup is never set from data: " + key);
      if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key in el) el[key] = value;
      else el.setAttribute(key, String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      if (Array.isArray(child)) append(el, child);
      else if (child instanceof Node) el.appendChild(child);
      else el.appendChild(document.createTextNode(String(child)));
    }
  }

  const code = (text) => h("code", null, text);
  const muted = (...children) => h("span", { className: "muted" }, children);
  const chip = (text, kind) => h("span", { className: "chip" + (kind ? " chip-" + kind : "") }, text);
  const notice = (text, kind) => h("div", { className: "notice" + (kind ? " " + kind : "") }, text);

  // A collapsible section.
  function section(title, body, open) {
    return h("details", { className: "section", open: open !== false }, h("summary", null, title), body);
  }

  // ---------------------------------------------------------------- formatting

  const fmt = {
    int(n) {
      if (n === null || n === undefined || Number.isNaN(Number(n))) return "—";
      return String(Math.round(Number(n))).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    },
    cost(usd) {
      if (usd === null || usd === undefined) return "—";
      if (usd === 0) return "$0";
      return "$" + (usd >= 1 ? usd.toFixed(2) : usd.toFixed(6));
    },
    ms(ms) {
      if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
      if (ms < 1) return ms.toFixed(2) + " ms";
      if (ms < 10) return ms.toFixed(1) + " ms";
      if (ms < 1000) return Math.round(ms) + " ms";
      return (ms / 1000).toFixed(2) + " s";
    },
    // A time (ISO string or Unix nanoseconds) in local time, to the second.
    time(value) {
      if (value === null || value === undefined) return "—";
      const d = typeof value === "number" ? new Date(value / 1e6) : new Date(value);
      if (Number.isNaN(d.getTime())) return String(value);
      const p = (n, w) => String(n).padStart(w || 2, "0");
      return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
        `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    },
  };

  // JSON text pretty-printed; other text as is.
  function pretty(value) {
    if (typeof value === "string") {
      try {
        const parsed = JSON.parse(value);
        if (parsed !== null && typeof parsed === "object") return JSON.stringify(parsed, null, 2);
      } catch (_) {
        // Not JSON: shown as sent.
      }
      return value;
    }
    return JSON.stringify(value, null, 2);
  }

  // An ISO time as the value of a datetime-local input (local time).
  function localInputValue(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T` +
      `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  // ---------------------------------------------------------------- routing and fetching

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const q = raw.indexOf("?");
    const path = q < 0 ? raw : raw.slice(0, q);
    const parts = path.split("/").filter(Boolean).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch (_) {
        return p;
      }
    });
    return { parts, params: new URLSearchParams(q < 0 ? "" : raw.slice(q + 1)) };
  }

  function hashFor(parts, params) {
    const path = "#/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
    const query = params ? params.toString() : "";
    return query ? path + "?" + query : path;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      // Not JSON: the status says enough.
    }
    if (!response.ok) {
      const message = (body && body.error && body.error.message) || (body && body.message) ||
        `HTTP ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  let generation = 0; // the current render; results of an older one are dropped
  let shownTrace = null; // {traceId, select(spanId)} while a trace is on screen

  async function route(force) {
    const { parts, params } = parseHash();
    const view = parts[0] || "traces";
    for (const link of nav.querySelectorAll("a")) {
      link.classList.toggle("active", link.dataset.view === (view === "trace" ? "traces" : view));
    }
    if (!force && view === "trace" && shownTrace && shownTrace.traceId === parts[1]) {
      shownTrace.select(parts[2]);
      return;
    }
    shownTrace = null;
    const token = ++generation;
    const render = (...nodes) => {
      if (token === generation) app.replaceChildren(...nodes.flat().filter(Boolean));
      return token === generation;
    };
    try {
      if (view === "traces") await tracesView(params, render);
      else if (view === "trace" && parts[1]) await traceView(parts[1], parts[2], render);
      else if (view === "sessions" && parts[1]) await sessionView(parts[1], params, render);
      else if (view === "sessions") await sessionsView(params, render);
      else if (view === "prompts" && parts[1]) await promptView(parts[1], parts[2], render);
      else if (view === "prompts") await promptsView(render);
      else render(notice("There is no such page.", "error"));
    } catch (error) {
      render(notice(`Could not load this page: ${error.message}`, "error"));
    }
  }

  function pageHead(title, ...extra) {
    document.title = title + " · tracia-collector";
    return h("div", { className: "page-head" }, h("h1", null, title), extra,
      h("button", { type: "button", className: "secondary", onclick: () => route(true) }, "Refresh"));
  }

  // Links to the first and the next page (cursors only go forward; Back goes back).
  function pager(params, nextCursor, hashOf) {
    const links = [];
    if (params.get("cursor")) {
      const first = new URLSearchParams(params);
      first.delete("cursor");
      links.push(h("a", { className: "button secondary", href: hashOf(first) }, "← First page"));
    }
    if (nextCursor) {
      const next = new URLSearchParams(params);
      next.set("cursor", nextCursor);
      links.push(h("a", { className: "button secondary", href: hashOf(next) }, "Next page →"));
    }
    return links.length ? h("div", { className: "pager" }, links) : null;
  }

  // ---------------------------------------------------------------- traces

  const TRACE_FILTERS = ["model", "status", "session", "user", "tag", "since", "until"];

  async function tracesView(params, render) {
    const query = new URLSearchParams();
    for (const key of [...TRACE_FILTERS, "cursor"]) {
      if (params.get(key)) query.set(key, params.get(key));
    }
    const data = await getJSON("/api/ui/traces?" + query);
    const filtered = TRACE_FILTERS.some((k) => params.get(k));
    render(
      pageHead("Traces"),
      filterForm(params),
      data.traces.length
        ? traceTable(data.traces)
        : notice(filtered
          ? "No trace matches these filters."
          : `No traces yet. Point an OpenTelemetry exporter at ${location.origin}/v1/traces ` +
            `(OTEL_EXPORTER_OTLP_ENDPOINT=${location.origin}).`),
      pager(params, data.nextCursor, (p) => hashFor(["traces"], p)),
    );
  }

  function filterForm(params) {
    const text = (name, placeholder) =>
      h("input", { type: "text", name, value: params.get(name) || "", placeholder });
    const when = (name) =>
      h("input", { type: "datetime-local", name, step: "1", value: localInputValue(params.get(name)) });
    const status = h("select", { name: "status" },
      [["", "any"], ["SUCCESS", "success"], ["ERROR", "error"]].map(([value, label]) =>
        h("option", { value, selected: (params.get("status") || "") === value }, label)));
    const field = (label, input) => h("label", { className: "field" }, h("span", null, label), input);
    const form = h("form", {
      className: "filters",
      onsubmit(event) {
        event.preventDefault();
        const next = new URLSearchParams();
        for (const [key, raw] of new FormData(form)) {
          const value = String(raw).trim();
          if (!value) continue;
          // The inputs hold local times; the API takes ISO-8601 UTC.
          next.set(key, key === "since" || key === "until" ? new Date(value).toISOString() : value);
        }
        location.hash = hashFor(["traces"], next);
      },
    },
    field("Model", text("model", "gpt-4o")),
    field("Status", status),
    field("Session", text("session", "session id")),
    field("User", text("user", "user id")),
    field("Tag", text("tag", "tag")),
    field("Since", when("since")),
    field("Until", when("until")),
    h("div", { className: "filter-actions" },
      h("button", { type: "submit" }, "Apply"),
      h("a", { className: "button secondary", href: "#/traces" }, "Clear")));
    return form;
  }

  function traceTable(traces) {
    const head = ["Start", "Trace", "Service", "Models", "Spans", "Errors", "Tokens (in / out)",
      "Cost", "Latency", "Session / user"];
    return h("div", { className: "table-wrap" }, h("table", { className: "list traces" },
      h("thead", null, h("tr", null, head.map((c) => h("th", null, c)))),
      h("tbody", null, traces.map((t) => {
        const href = hashFor(["trace", t.traceId]);
        return h("tr", {
          className: t.errorCount > 0 ? "has-error" : "",
          dataset: { traceId: t.traceId },
          onclick(event) {
            if (!event.target.closest("a")) location.hash = href;
          },
        },
        h("td", { className: "nowrap" }, fmt.time(t.startedAt)),
        h("td", null, h("a", { href, className: "strong" }, t.rootName || t.traceId),
          h("div", { className: "small muted mono" }, t.traceId)),
        h("td", null, t.serviceName || "—"),
        h("td", null, t.models.map((m) => chip(m, "model"))),
        h("td", { className: "num" }, fmt.int(t.spanCount)),
        h("td", { className: "num" + (t.errorCount > 0 ? " error-text" : "") }, fmt.int(t.errorCount)),
        h("td", { className: "num nowrap" }, `${fmt.int(t.inputTokens)} / ${fmt.int(t.outputTokens)}`),
        h("td", { className: "num" }, fmt.cost(t.costUsd)),
        h("td", { className: "num" }, fmt.ms(t.durationMs)),
        h("td", null,
          t.sessionId ? h("a", { href: hashFor(["sessions", t.sessionId]) }, t.sessionId) : muted("—"),
          t.userId ? h("div", { className: "small muted" }, t.userId) : null,
          t.tags.length ? h("div", null, t.tags.map((tag) => chip(tag, "tag"))) : null));
      }))));
  }

  // ---------------------------------------------------------------- one trace

  const isGenAI = (span) => span.kind === "LLM" || span.kind === "EMBEDDING";

  async function traceView(traceId, spanId, render) {
    const data = await getJSON("/api/ui/traces/" + encodeURIComponent(traceId));
    const spans = data.spans;
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const children = new Map();
    const roots = [];
    for (const span of spans) {
      // A span whose parent never arrived is shown as a root.
      const parent = span.parentSpanId && byId.has(span.parentSpanId) ? span.parentSpanId : null;
      if (parent) {
        if (!children.has(parent)) children.set(parent, []);
        children.get(parent).push(span);
      } else {
        roots.push(span);
      }
    }
    const byStart = (a, b) => a.startUnixNano - b.startUnixNano;
    roots.sort(byStart);
    for (const list of children.values()) list.sort(byStart);

    const start = Math.min(...spans.map((s) => s.startUnixNano));
    const end = Math.max(...spans.map((s) => s.endUnixNano));
    const total = Math.max(end - start, 1);
    const sum = (key) => spans.reduce((n, s) => n + (s[key] || 0), 0);
    const priced = spans.filter((s) => s.costUsd !== null && s.costUsd !== undefined);
    const session = spans.find((s) => s.sessionId);
    const user = spans.find((s) => s.userId);
    const root = roots[0];

    const rows = new Map(); // spanId -> row link
    function node(span, depth) {
      const offset = ((span.startUnixNano - start) / total) * 100;
      const width = ((span.endUnixNano - span.startUnixNano) / total) * 100;
      const bar = h("span", { className: "wf-bar" });
      bar.style.left = offset + "%";
      bar.style.width = Math.max(width, 0.4) + "%";
      const label = h("span", { className: "wf-label" }, kindBadge(span), h("span", { className: "wf-name" }, span.name));
      label.style.paddingLeft = 8 + depth * 18 + "px";
      const row = h("a", {
        className: `wf-row kind-${span.kind.toLowerCase()}` + (span.status === "ERROR" ? " is-error" : ""),
        href: hashFor(["trace", traceId, span.spanId]),
        title: span.name,
      }, label, h("span", { className: "wf-track" }, bar),
      h("span", { className: "wf-dur" }, fmt.ms((span.endUnixNano - span.startUnixNano) / 1e6)));
      rows.set(span.spanId, row);
      const kids = children.get(span.spanId) || [];
      return h("li", { className: "wf-node", dataset: { spanId: span.spanId, depth: String(depth) } },
        row, kids.length ? h("ul", { className: "wf-children" }, kids.map((k) => node(k, depth + 1))) : null);
    }
    const tree = h("ul", { className: "wf-tree" }, roots.map((r) => node(r, 0)));
    const scale = h("div", { className: "wf-scale" }, h("span", { className: "wf-label" }, "Span"),
      h("span", { className: "wf-track" }, [0, 25, 50, 75, 100].map((pct) => {
        const tick = h("span", { className: "wf-tick" }, pct ? fmt.ms((total * pct) / 100 / 1e6) : "0");
        tick.style.left = pct + "%";
        return tick;
      })), h("span", { className: "wf-dur" }, "Duration"));

    const details = h("section", { className: "panel details", id: "span-details" });
    function select(id) {
      const chosen = byId.get(id) || spans.filter(isGenAI).sort(byStart)[0] || root;
      for (const [sid, row] of rows) row.classList.toggle("selected", sid === chosen.spanId);
      details.replaceChildren(...spanDetails(chosen, traceId).filter(Boolean));
    }

    const header = pageHead(root ? root.name : traceId);
    const summary = h("div", { className: "summary" },
      h("span", null, "Trace ", code(traceId)),
      h("span", null, fmt.time(start)),
      h("span", null, "Duration ", h("strong", null, fmt.ms(total / 1e6))),
      h("span", null, "Spans ", h("strong", null, fmt.int(spans.length))),
      h("span", null, "Tokens ", h("strong", null, `${fmt.int(sum("inputTokens"))} in / ${fmt.int(sum("outputTokens"))} out`)),
      h("span", null, "Cost ", h("strong", null, priced.length ? fmt.cost(priced.reduce((n, s) => n + s.costUsd, 0)) : "—")),
      session ? h("span", null, "Session ", h("a", { href: hashFor(["sessions", session.sessionId]) }, session.sessionId)) : null,
      user ? h("span", null, "User ", h("strong", null, user.userId)) : null);
    const shown = render(
      h("a", { className: "back", href: "#/traces" }, "← Traces"),
      header,
      summary,
      h("div", { className: "trace-layout" },
        h("section", { className: "panel waterfall" }, scale, tree),
        details),
    );
    document.title = (root ? root.name : traceId) + " · tracia-collector";
    if (shown) {
      select(spanId);
      shownTrace = { traceId, select };
    }
  }

  function kindBadge(span) {
    return h("span", { className: "kind kind-" + span.kind.toLowerCase() }, span.kind);
  }

  function statusBadge(status) {
    return h("span", { className: "status status-" + String(status).toLowerCase() }, status);
  }

  function spanDetails(span, traceId) {
    const attrs = span.attributes || {};
    const genai = isGenAI(span);
    return [
      h("div", { className: "detail-head" }, kindBadge(span), h("h2", null, span.name), statusBadge(span.status)),
      h("div", { className: "small muted ids" }, "span ", code(span.spanId),
        span.parentSpanId ? [" · parent ", h("a", { href: hashFor(["trace", traceId, span.parentSpanId]) }, code(span.parentSpanId))] : null,
        span.serviceName ? [" · service ", span.serviceName] : null),
      span.status === "ERROR"
        ? h("div", { className: "error-box" }, h("strong", null, "Error"),
          h("div", { className: "error-message" }, span.error || "(no message)"),
          attrs["error.type"] !== undefined ? h("div", { className: "small" }, "error.type ", code(attrs["error.type"])) : null)
        : null,
      metrics(span, attrs, genai),
      labels(span),
      genai ? conversation(span, attrs) : null,
      tools(span, attrs),
      variables(span),
      attributeTable(attrs, !genai),
    ];
  }

  function metrics(span, attrs, genai) {
    const items = [];
    const add = (label, value) => {
      if (value !== undefined && value !== null && value !== "") items.push([label, value]);
    };
    add("Latency", fmt.ms((span.endUnixNano - span.startUnixNano) / 1e6));
    const ttfc = attrs["gen_ai.response.time_to_first_chunk"];
    if (typeof ttfc === "number") add("Time to first chunk", fmt.ms(ttfc * 1000));
    add("Model", span.model);
    if (attrs["gen_ai.response.model"] !== span.model) add("Response model", attrs["gen_ai.response.model"]);
    add("Provider", span.provider);
    if (genai) {
      add("Input tokens", fmt.int(span.inputTokens));
      add("Output tokens", fmt.int(span.outputTokens));
      add("Total tokens", fmt.int(span.totalTokens));
    }
    const count = (key) => (attrs[key] === undefined ? undefined : fmt.int(attrs[key]));
    add("Cache read tokens", count("gen_ai.usage.cache_read.input_tokens"));
    add("Cache write tokens", count("gen_ai.usage.cache_creation.input_tokens") || count("gen_ai.usage.cache_write.input_tokens"));
    add("Reasoning tokens", count("gen_ai.usage.reasoning.output_tokens"));
    if (genai) add("Cost", fmt.cost(span.costUsd));
    const reasons = attrs["gen_ai.response.finish_reasons"];
    add("Finish reasons", Array.isArray(reasons) ? reasons.join(", ") : reasons);
    add("Temperature", span.temperature);
    add("Top p", span.topP);
    add("Max output tokens", span.maxOutputTokens);
    add("Started", fmt.time(span.startUnixNano));
    return h("dl", { className: "metrics" }, items.map(([label, value]) =>
      h("div", { className: "metric" }, h("dt", null, label), h("dd", null, value))));
  }

  function labels(span) {
    const items = [];
    if (span.sessionId) items.push(["Session", h("a", { href: hashFor(["sessions", span.sessionId]) }, span.sessionId)]);
    if (span.userId) items.push(["User", span.userId]);
    if (span.tags && span.tags.length) items.push(["Tags", span.tags.map((t) => chip(t, "tag"))]);
    if (span.promptSlug) {
      const version = span.promptVersion === null || span.promptVersion === undefined ? [] : [span.promptVersion];
      items.push(["Prompt", h("a", { href: hashFor(["prompts", span.promptSlug, ...version]) },
        span.promptSlug + (version.length ? " v" + version[0] : ""))]);
    }
    if (!items.length) return null;
    return h("dl", { className: "labels" }, items.map(([label, value]) =>
      h("div", null, h("dt", null, label), h("dd", null, value))));
  }

  // An attribute holding a JSON array (as JSON text, which is how spans carry it).
  function jsonList(attrs, key) {
    const value = attrs[key];
    if (Array.isArray(value)) return value;
    if (typeof value !== "string") return null;
    try {
      const parsed = JSON.parse(value);
      return Array.isArray(parsed) ? parsed : null;
    } catch (_) {
      return null;
    }
  }

  // The conversation as [{role, name, parts, finishReason}], parts in the GenAI
  // semantic-convention shape ({type: text|reasoning|tool_call|tool_call_response, ...}).
  function messagesOf(span, attrs) {
    const system = jsonList(attrs, "gen_ai.system_instructions");
    const input = jsonList(attrs, "gen_ai.input.messages");
    const output = jsonList(attrs, "gen_ai.output.messages");
    const parts = (list) => (Array.isArray(list) ? list : []);
    if (system || input || output) {
      const messages = [];
      if (system && system.length) messages.push({ role: "system", parts: system });
      for (const m of input || []) messages.push({ role: String(m.role || "user"), name: m.name, parts: parts(m.parts) });
      for (const m of output || []) {
        messages.push({ role: String(m.role || "assistant"), name: m.name, parts: parts(m.parts), finishReason: m.finish_reason });
      }
      return messages;
    }
    // A span sent to Tracia's REST API: Tracia's message shapes, the answer and tool calls.
    const messages = [];
    const sent = span.input && Array.isArray(span.input.messages) ? span.input.messages : [];
    for (const m of sent) messages.push({ role: String(m.role || "user"), name: m.toolName || m.tool_name, parts: traciaParts(m) });
    const answer = [];
    if (span.output) answer.push({ type: "text", content: span.output });
    for (const call of span.toolCalls || []) answer.push({ type: "tool_call", id: call.id, name: call.name, arguments: call.arguments });
    if (answer.length) messages.push({ role: "assistant", parts: answer });
    return messages;
  }

  // A Tracia message's content as semantic-convention parts.
  function traciaParts(message) {
    const content = message.content;
    if (message.role === "tool") {
      return [{ type: "tool_call_response", id: message.toolCallId || message.tool_call_id, response: content }];
    }
    if (typeof content === "string") return [{ type: "text", content }];
    if (!Array.isArray(content)) return [];
    return content.map((p) => (p && p.type === "text" ? { type: "text", content: p.text } : p));
  }

  function conversation(span, attrs) {
    if (span.kind === "EMBEDDING") {
      const texts = span.input && Array.isArray(span.input.text) ? span.input.text : [];
      return section("Input texts", texts.length
        ? h("ol", { className: "texts" }, texts.map((t) => h("li", null, h("div", { className: "part-text" }, t))))
        : h("p", { className: "muted" }, "No input text captured."));
    }
    const messages = messagesOf(span, attrs);
    return section("Conversation", messages.length
      ? h("div", { className: "conversation" }, messages.map(messageView))
      : h("p", { className: "muted" }, "No message content captured."));
  }

  function messageView(message) {
    const role = message.role;
    return h("div", { className: "msg role-" + role.toLowerCase().replace(/[^a-z_-]/g, ""), dataset: { role } },
      h("div", { className: "msg-role" }, role,
        message.name ? muted(" · " + message.name) : null,
        message.finishReason ? muted(" · finish: " + message.finishReason) : null),
      message.parts.map(partView));
  }

  function partView(part) {
    if (!part || typeof part !== "object") return h("div", { className: "part-text" }, String(part));
    const id = part.id ? muted(" " + part.id) : null;
    switch (part.type) {
      case "text":
        return h("div", { className: "part-text" }, String(part.content ?? ""));
      case "reasoning":
        return h("details", { className: "part-reasoning", open: true }, h("summary", null, "Reasoning"),
          h("div", { className: "part-text" }, String(part.content ?? "")));
      case "tool_call":
        return h("div", { className: "part-tool-call" },
          h("div", { className: "part-title" }, "Tool call ", code(String(part.name ?? "")), id),
          h("pre", { className: "json" }, pretty(part.arguments === undefined ? {} : part.arguments)));
      case "tool_call_response":
        return h("div", { className: "part-tool-result" },
          h("div", { className: "part-title" }, "Tool result", id),
          h("pre", { className: "json" }, pretty(part.response)));
      default:
        return h("pre", { className: "json" }, pretty(part));
    }
  }

  function tools(span, attrs) {
    const list = Array.isArray(span.tools) && span.tools.length ? span.tools : jsonList(attrs, "gen_ai.tool.definitions");
    if (!list || !list.length) return null;
    return section(`Tools (${list.length})`, h("div", { className: "tools" }, list.map((tool) => {
      const fn = tool.function || tool; // the OpenAI wire shape nests it
      return h("div", { className: "tool" },
        h("div", { className: "part-title" }, code(String(fn.name ?? "?"))),
        fn.description ? h("p", null, fn.description) : null,
        fn.parameters ? h("details", null, h("summary", null, "Parameters"), h("pre", { className: "json" }, pretty(fn.parameters))) : null);
    })), true);
  }

  function variables(span) {
    const vars = span.variables;
    if (!vars || typeof vars !== "object" || !Object.keys(vars).length) return null;
    return section("Variables", h("table", { className: "attrs" }, h("tbody", null,
      Object.keys(vars).sort().map((k) => h("tr", null, h("th", null, k), h("td", null, attrValue(vars[k])))))));
  }

  function attributeTable(attrs, open) {
    const keys = Object.keys(attrs).sort();
    return section(`Attributes (${keys.length})`, keys.length
      ? h("table", { className: "attrs" }, h("tbody", null,
        keys.map((k) => h("tr", null, h("th", null, k), h("td", null, attrValue(attrs[k]))))))
      : h("p", { className: "muted" }, "No attributes."), open);
  }

  function attrValue(value) {
    if (typeof value === "string") {
      return value.length > 120 || value.includes("\n") ? h("pre", { className: "raw" }, value) : value;
    }
    if (value !== null && typeof value === "object") return h("pre", { className: "raw" }, JSON.stringify(value, null, 2));
    return String(value);
  }

  // ---------------------------------------------------------------- sessions

  async function sessionsView(params, render) {
    const query = new URLSearchParams();
    if (params.get("cursor")) query.set("cursor", params.get("cursor"));
    const data = await getJSON("/api/ui/sessions?" + query);
    const head = ["Session", "User", "Traces", "Spans", "Tokens (in / out)", "Cost", "First seen", "Last seen"];
    render(
      pageHead("Sessions"),
      data.sessions.length
        ? h("div", { className: "table-wrap" }, h("table", { className: "list sessions" },
          h("thead", null, h("tr", null, head.map((c) => h("th", null, c)))),
          h("tbody", null, data.sessions.map((s) => {
            const href = hashFor(["sessions", s.sessionId]);
            return h("tr", {
              dataset: { sessionId: s.sessionId },
              onclick(event) {
                if (!event.target.closest("a")) location.hash = href;
              },
            },
            h("td", null, h("a", { href, className: "strong" }, s.sessionId)),
            h("td", null, s.userId || "—"),
            h("td", { className: "num" }, fmt.int(s.traceCount)),
            h("td", { className: "num" }, fmt.int(s.spanCount)),
            h("td", { className: "num nowrap" }, `${fmt.int(s.inputTokens)} / ${fmt.int(s.outputTokens)}`),
            h("td", { className: "num" }, fmt.cost(s.costUsd)),
            h("td", { className: "nowrap" }, fmt.time(s.firstSeen)),
            h("td", { className: "nowrap" }, fmt.time(s.lastSeen)));
          }))))
        : notice("No sessions yet. LLM calls join a session with the SDK's session_id (the session.id attribute)."),
      pager(params, data.nextCursor, (p) => hashFor(["sessions"], p)),
    );
  }

  async function sessionView(sessionId, params, render) {
    const query = new URLSearchParams();
    if (params.get("cursor")) query.set("cursor", params.get("cursor"));
    const data = await getJSON(`/api/ui/sessions/${encodeURIComponent(sessionId)}?` + query);
    render(
      h("a", { className: "back", href: "#/sessions" }, "← Sessions"),
      pageHead("Session " + sessionId),
      traceTable(data.traces),
      pager(params, data.nextCursor, (p) => hashFor(["sessions", sessionId], p)),
    );
  }

  // ---------------------------------------------------------------- prompts

  // The prompt API answers 404 (or nothing at all) on a collector without prompts.
  async function orMissing(promise) {
    try {
      return await promise;
    } catch (error) {
      if (error.status === 404 || error.status === 405) return null;
      throw error;
    }
  }

  async function promptsView(render) {
    const data = await orMissing(getJSON("/api/v1/prompts"));
    const prompts = (data && data.prompts) || [];
    const head = ["Name", "Slug", "Version", "Model", "Provider", "Variables", "Updated"];
    render(
      pageHead("Prompts"),
      !data
        ? notice("Prompt management is not available on this collector (GET /api/v1/prompts answered 404).")
        : prompts.length
          ? h("div", { className: "table-wrap" }, h("table", { className: "list prompts" },
            h("thead", null, h("tr", null, head.map((c) => h("th", null, c)))),
            h("tbody", null, prompts.map((p) => h("tr", { dataset: { slug: p.slug } },
              h("td", null, h("a", { href: hashFor(["prompts", p.slug]), className: "strong" }, p.name || p.slug),
                p.description ? h("div", { className: "small muted" }, p.description) : null),
              h("td", { className: "mono" }, p.slug),
              h("td", { className: "num" }, p.currentVersion ?? "—"),
              h("td", null, p.model || "—"),
              h("td", null, p.provider || "—"),
              h("td", null, (p.variables || []).map((v) => chip(v, "tag"))),
              h("td", { className: "nowrap" }, p.updatedAt ? fmt.time(p.updatedAt) : "—"))))))
          : notice("No prompts yet. Create one with POST /api/v1/prompts."),
    );
  }

  async function promptView(slug, version, render) {
    const path = "/api/v1/prompts/" + encodeURIComponent(slug);
    const [prompt, history] = await Promise.all([
      orMissing(getJSON(path)),
      orMissing(getJSON(path.replace("/api/v1/", "/api/ui/") + "/versions")),
    ]);
    if (!prompt) {
      render(h("a", { className: "back", href: "#/prompts" }, "← Prompts"), notice(`Prompt not found: ${slug}`, "error"));
      return;
    }
    let versions = (history && history.versions) || [];
    if (!versions.length) {
      versions = [{ version: prompt.currentVersion, content: prompt.content || [], createdAt: prompt.updatedAt }];
    }
    versions = versions.slice().sort((a, b) => b.version - a.version);
    const chosen = versions.find((v) => String(v.version) === version) ||
      versions.find((v) => v.version === prompt.currentVersion) || versions[0];
    const messages = (chosen.content || []).map((m) => ({ role: String(m.role || "user"), parts: traciaParts(m) }));
    render(
      h("a", { className: "back", href: "#/prompts" }, "← Prompts"),
      pageHead(prompt.name || slug),
      h("div", { className: "summary" },
        h("span", null, "Slug ", code(slug)),
        prompt.model ? h("span", null, "Model ", h("strong", null, prompt.model)) : null,
        prompt.provider ? h("span", null, "Provider ", h("strong", null, prompt.provider)) : null,
        (prompt.variables || []).length ? h("span", null, "Variables ", prompt.variables.map((v) => chip(v, "tag"))) : null),
      prompt.description ? h("p", null, prompt.description) : null,
      h("div", { className: "prompt-layout" },
        h("section", { className: "panel versions" }, h("h2", null, "Versions"),
          h("ul", { className: "version-list" }, versions.map((v) => h("li", null,
            h("a", {
              href: hashFor(["prompts", slug, v.version]),
              className: v === chosen ? "selected" : "",
            }, "v" + v.version, v.version === prompt.currentVersion ? chip("current") : null,
            v.createdAt ? h("div", { className: "small muted" }, fmt.time(v.createdAt)) : null))))),
        h("section", { className: "panel" }, h("h2", null, `Version ${chosen.version}`),
          messages.length ? h("div", { className: "conversation" }, messages.map(messageView))
            : h("p", { className: "muted" }, "This version has no messages."))),
    );
  }

  // ---------------------------------------------------------------- start

  window.addEventListener("hashchange", () => route(false));
  route(false);
})();
