// kotae's question page. Hand-written, no dependencies, no build step.
// Document text is untrusted: it is only ever written with textContent / createTextNode.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ small DOM helpers

  function el(tag, options, ...children) {
    const node = document.createElement(tag);
    const o = options || {};
    if (o.className) node.className = o.className;
    if (o.text !== undefined && o.text !== null) node.textContent = String(o.text);
    if (o.lang) node.lang = o.lang;
    if (o.attrs) for (const [k, v] of Object.entries(o.attrs)) node.setAttribute(k, v);
    for (const child of children) if (child) node.append(child);
    return node;
  }

  // A Japanese label with its English sub-label: 「質問 Ask」.
  function bilingual(ja, en, tag) {
    return el(tag || "span", {}, document.createTextNode(ja + " "), el("span", { className: "en", lang: "en", text: en }));
  }

  // Python counts characters (code points), JavaScript strings count UTF-16 units: convert.
  function utf16Index(text, codePoints) {
    if (!/[\uD800-\uDFFF]/.test(text)) return Math.min(codePoints, text.length);
    let units = 0;
    for (let i = 0; i < codePoints && units < text.length; i++) {
      units += text.codePointAt(units) > 0xffff ? 2 : 1;
    }
    return units;
  }

  // Text with [start, end) (code points) inside a <mark>; returns the container and the mark.
  function highlighted(tag, className, text, start, end) {
    const node = el(tag, { className });
    const a = utf16Index(text, start);
    const b = utf16Index(text, end);
    node.append(document.createTextNode(text.slice(0, a)));
    const mark = el("mark", { text: text.slice(a, b) });
    node.append(mark, document.createTextNode(text.slice(b)));
    return { node, mark };
  }

  function formatScore(score) {
    return typeof score === "number" && isFinite(score) ? score.toFixed(3) : "—";
  }

  function describeSource(record) {
    const parts = [];
    if (record.title) parts.push(el("span", { className: "title", text: record.title }));
    const where = record.source || record.document_id;
    if (where) parts.push(el("code", { text: shortName(record), attrs: { title: record.document_id || where } }));
    if (record.page) parts.push(el("span", { className: "page", text: "p. " + record.page }));
    return parts;
  }

  // The file name (and the id inside it, for a JSONL line): the full path is in the tooltip.
  function shortName(record) {
    const source = record.source || "";
    const id = record.document_id || "";
    if (!source) return id;
    let name = source.split(/[\\/]/).pop() || source;
    if (id.startsWith(source + "#")) name += id.slice(source.length);
    return name;
  }

  function joinWithDots(parent, parts) {
    parts.forEach((part, i) => {
      if (i) parent.append(document.createTextNode(" · "));
      parent.append(part);
    });
    return parent;
  }

  // Every request of the page goes through here (one place for headers such as credentials).
  // A server started with an API key answers 401: ask for the key once, keep it for this tab
  // (sessionStorage), and have the server start a session (POST /api/session): it answers with
  // its own HttpOnly, SameSite=Strict cookie, so that /collection opens. No script ever writes
  // the key into a cookie (cookies are shared by every port of a host name).
  const KEY_STORE = "kotae.apiKey";

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORE) || "";
    } catch (error) {
      return "";
    }
  }

  async function keepKey(key) {
    try {
      sessionStorage.setItem(KEY_STORE, key);
    } catch (error) {
      /* storage disabled: the session cookie alone carries on */
    }
    await fetch("/api/session", { method: "POST", headers: { "X-API-Key": key }, credentials: "same-origin" });
  }

  async function api(url, options, retried) {
    const o = Object.assign({}, options || {});
    o.headers = Object.assign({ Accept: "application/json" }, o.headers || {});
    const key = storedKey();
    if (key) o.headers["X-API-Key"] = key;
    o.credentials = "same-origin";
    const response = await fetch(url, o);
    if (response.status !== 401 || retried) return response;
    const entered = window.prompt("APIキーを入力してください / This server needs an API key:", "");
    if (!entered) return response;
    await keepKey(entered.trim());
    return api(url, options, true);
  }

  async function readJson(response) {
    const type = response.headers.get("content-type") || "";
    if (!type.includes("json")) return null;
    try {
      return await response.json();
    } catch (error) {
      return null;
    }
  }

  function oneLine(message) {
    return String(message || "").split("\n")[0].slice(0, 300);
  }

  // ------------------------------------------------------------------ the whole document, in a dialog

  const dialog = $("doc");
  let opener = null;
  let documentRequest = 0;

  async function showDocument(documentId, start, end, trigger) {
    const request = ++documentRequest; // only the latest click fills the dialog
    opener = trigger || document.activeElement;
    const text = $("doc-text");
    const source = $("doc-source");
    const note = $("doc-note");
    text.textContent = "読み込み中… Loading…";
    source.textContent = "";
    note.hidden = true;
    if (!dialog.open) dialog.showModal();
    let data;
    try {
      const response = await api("/api/document?id=" + encodeURIComponent(documentId));
      data = await readJson(response);
      if (request !== documentRequest) return;
      if (!response.ok) throw new Error((data && data.error) || "HTTP " + response.status);
    } catch (error) {
      if (request !== documentRequest) return;
      text.textContent = "";
      text.append(bilingual("文書を読み込めませんでした。", "The document could not be loaded."));
      note.textContent = oneLine(error.message);
      note.hidden = false;
      return;
    }
    joinWithDots(source, describeSource(data));
    if (typeof start === "number" && typeof end === "number" && end >= start) {
      const shown = highlighted("span", "", data.text, start, end);
      shown.mark.id = "doc-answer";
      text.replaceChildren(shown.node);
      requestAnimationFrame(() => shown.mark.scrollIntoView({ block: "center" }));
    } else {
      text.textContent = data.text;
      text.scrollTop = 0;
    }
    if (!data.from_source_file) {
      note.textContent = "元のファイルが見つからないか索引の後で変わったため、索引のパッセージから組み立てています（段落の区切りは推定です）。 The file is gone or changed since indexing: shown as rebuilt from the indexed passages (line breaks approximate).";
      note.hidden = false;
    }
  }

  if (dialog) {
    $("doc-close").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      if (opener && document.contains(opener)) opener.focus();
    });
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close(); // a click on the backdrop
    });
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.show-doc");
    if (!button) return;
    const start = button.dataset.start === undefined ? null : Number(button.dataset.start);
    const end = button.dataset.end === undefined ? null : Number(button.dataset.end);
    showDocument(button.dataset.documentId, start, end, button);
  });

  for (const time of document.querySelectorAll("time[data-local]")) {
    const when = new Date(time.dateTime);
    if (!isNaN(when)) time.textContent = when.toLocaleString("ja-JP") + " (" + time.dateTime + ")";
  }

  // ------------------------------------------------------------------ asking

  const form = $("ask");
  if (!form) return;
  const input = $("q");
  const topK = $("k");
  const status = $("status");
  const results = $("results");
  let composing = false;
  let inFlight = null;

  function setStatus(kind, ja, en, detail) {
    status.className = "status " + kind;
    status.replaceChildren();
    if (kind === "loading") status.append(el("span", { className: "spinner", attrs: { "aria-hidden": "true" } }));
    status.append(bilingual(ja, en));
    if (detail) status.append(el("span", { className: "detail", text: detail }));
  }

  // ------------------------------------------------------------------ feedback on an answer

  // Code points in text.slice(0, units): the server counts characters as Python does.
  function codePoints(text, units) {
    return Array.from(text.slice(0, units)).length;
  }

  // The selection inside passageNode as [start, end) code points of its text, or null.
  function selectionIn(passageNode) {
    const selection = window.getSelection();
    if (!selection || selection.rangeCount === 0 || selection.isCollapsed) return null;
    const range = selection.getRangeAt(0);
    if (!passageNode.contains(range.startContainer) || !passageNode.contains(range.endContainer)) return null;
    const before = document.createRange();
    before.selectNodeContents(passageNode);
    before.setEnd(range.startContainer, range.startOffset);
    const text = passageNode.textContent;
    const startUnits = before.toString().length;
    const endUnits = startUnits + range.toString().length;
    const start = codePoints(text, startUnits);
    const end = codePoints(text, endUnits);
    return end > start ? { start, end } : null;
  }

  function feedbackBox(record, question, passageNode) {
    const box = el("div", { className: "feedback" });
    const buttons = el("div", { className: "feedback-buttons" });
    const correct = el("button", { className: "secondary feedback-correct", attrs: { type: "button" } });
    correct.append(bilingual("正しい", "Correct"));
    const wrong = el("button", { className: "secondary feedback-wrong", attrs: { type: "button", "aria-expanded": "false" } });
    wrong.append(bilingual("違う", "Wrong"));
    buttons.append(bilingual("この答えは？", "Is this right?"), correct, wrong);

    const fix = el("div", { className: "feedback-fix" });
    fix.hidden = true;
    fix.append(bilingual("上のパッセージで正しい答えを選択してから送ってください。", "Select the right answer in the passage above, then send it.", "p"));
    const useSelection = el("button", { className: "feedback-selection", attrs: { type: "button" } });
    useSelection.append(bilingual("選択を正解として送る", "Send the selection"));
    const noAnswer = el("button", { className: "secondary feedback-no-answer", attrs: { type: "button" } });
    noAnswer.append(bilingual("このパッセージに答えはない", "No answer in this passage"));
    fix.append(useSelection, noAnswer);
    const said = el("p", { className: "feedback-status", attrs: { role: "status", "aria-live": "polite" } });
    box.append(buttons, fix, said);

    const all = [correct, wrong, useSelection, noAnswer];
    async function send(verdict, corrected) {
      const body = {
        question,
        verdict,
        passage_id: record.passage_id,
        document_id: record.document_id,
        answer_start: record.passage_start,
        answer_end: record.passage_end,
      };
      if (corrected) Object.assign(body, { corrected_start: corrected.start, corrected_end: corrected.end });
      all.forEach((button) => (button.disabled = true));
      said.className = "feedback-status";
      said.replaceChildren(bilingual("送信中…", "Sending…"));
      let data = null;
      let response = null;
      try {
        response = await api("/feedback", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
        data = await readJson(response);
      } catch (error) {
        data = { error: error.message };
      }
      if (response && response.ok) {
        said.className = "feedback-status sent";
        said.replaceChildren(bilingual("ありがとうございます。記録しました。", "Thank you, recorded."));
        if (corrected) said.append(el("span", { className: "detail", text: " 「" + (data && data.corrected) + "」" }));
        return;
      }
      all.forEach((button) => (button.disabled = false));
      said.className = "feedback-status failed";
      said.replaceChildren(bilingual("送信できませんでした。", "Could not send."));
      said.append(el("span", { className: "detail", text: " " + oneLine((data && data.error) || (response ? "HTTP " + response.status : "")) }));
    }

    correct.addEventListener("click", () => send("correct", null));
    wrong.addEventListener("click", () => {
      fix.hidden = !fix.hidden;
      wrong.setAttribute("aria-expanded", String(!fix.hidden));
    });
    noAnswer.addEventListener("click", () => send("no_answer", null));
    // Remembered on mousedown too, in case pressing the button moves the selection.
    let remembered = null;
    useSelection.addEventListener("mousedown", () => {
      remembered = selectionIn(passageNode);
    });
    useSelection.addEventListener("click", () => {
      const span = selectionIn(passageNode) || remembered;
      if (!span) {
        said.className = "feedback-status failed";
        said.replaceChildren(bilingual("パッセージの中で答えを選択してください。", "Select the answer inside the passage first."));
        return;
      }
      send("wrong", span);
    });
    return box;
  }

  function answerCard(record, rank, question) {
    const item = el("li", { className: "answer" });
    const article = el("article", { attrs: { "aria-label": rank + ". " + record.answer } });
    const head = el("div", { className: "answer-head" });
    head.append(
      el("span", { className: "rank", text: rank, attrs: { "aria-hidden": "true" } }),
      el("strong", { className: "answer-text", text: record.answer }),
      el("span", { className: "score" }, bilingual("スコア", "score"), document.createTextNode(" " + formatScore(record.score)))
    );
    article.append(head);
    const passage = record.passage !== null && record.passage !== undefined ? record.passage : record.context;
    const start = record.passage !== null && record.passage !== undefined ? record.passage_start : record.context_start;
    const end = record.passage !== null && record.passage !== undefined ? record.passage_end : record.context_end;
    const passageNode = highlighted("p", "passage", passage || "", start, end).node;
    article.append(passageNode);

    const source = el("p", { className: "source" });
    const parts = describeSource(record);
    const position = el("span", { className: "position" });
    position.append(bilingual("位置", "chars"), document.createTextNode(" " + record.start + "–" + record.end));
    parts.push(position);
    if (record.passage_index !== null && record.passage_index !== undefined) {
      const passageNumber = el("span", { className: "position" });
      passageNumber.append(bilingual("パッセージ", "passage"), document.createTextNode(" " + (record.passage_index + 1)));
      parts.push(passageNumber);
    }
    joinWithDots(source, parts);
    article.append(source);

    const show = el("button", {
      className: "secondary show-doc",
      attrs: { type: "button", "data-document-id": record.document_id, "data-start": record.start, "data-end": record.end },
    });
    show.append(bilingual("文書全体を見る", "Show the whole document"));
    article.append(show);
    if (record.passage_id && record.passage !== null && record.passage !== undefined && question) {
      article.append(feedbackBox(record, question, passageNode));
    }
    item.append(article);
    return item;
  }

  function passagesDetails(passages) {
    const details = el("details", { className: "retrieved" });
    const summary = el("summary");
    summary.append(bilingual("検索されたパッセージ (" + passages.length + ")", "Retrieved passages"));
    details.append(summary);
    const list = el("ol", { className: "passages" });
    for (const p of passages) {
      const item = el("li", { className: "retrieved-passage" });
      const meta = el("p", { className: "source" });
      const parts = describeSource(p);
      const score = el("span", {}, bilingual("検索スコア", "retrieval score"), document.createTextNode(" " + formatScore(p.score)));
      parts.push(score);
      joinWithDots(meta, parts);
      item.append(meta, el("p", { className: "passage", text: p.text }));
      if (p.document_id && typeof p.start === "number" && typeof p.end === "number") {
        const show = el("button", {
          className: "secondary show-doc",
          attrs: { type: "button", "data-document-id": p.document_id, "data-start": p.start, "data-end": p.end },
        });
        show.append(bilingual("文書の中で見る", "See it in the document"));
        item.append(show);
      }
      list.append(item);
    }
    details.append(list);
    return details;
  }

  function render(data) {
    results.replaceChildren();
    const found = data.answers.filter((a) => a.answer !== null && a.answer !== undefined);
    const nullFirst = data.answers.length > 0 && (data.answers[0].answer === null || data.answers[0].answer === undefined);
    const seconds = typeof data.seconds === "number" ? data.seconds.toFixed(2) : "?";
    if (!found.length || nullFirst) {
      const box = el("div", { className: "notice no-answer", attrs: { id: "no-answer" } });
      box.append(
        bilingual("しきい値を超える答えは見つかりませんでした。", "No answer above the threshold.", "p"),
        bilingual("言い換えるか、別の文書を索引に加えてみてください。", "Try rephrasing the question, or index more documents.", "p")
      );
      results.append(box);
      setStatus("done", "答えなし · " + seconds + " 秒", "no answer in " + seconds + " s");
    } else {
      setStatus("done", found.length + " 件の答え · " + seconds + " 秒", found.length + " answer" + (found.length === 1 ? "" : "s") + " in " + seconds + " s");
    }
    if (found.length) {
      if (nullFirst) results.append(bilingual("しきい値未満の候補", "Candidates below the threshold", "h2"));
      const list = el("ol", { className: "answers", attrs: { "aria-label": "答え (Answers)" } });
      found.forEach((record, i) => list.append(answerCard(record, i + 1, data.question)));
      results.append(list);
    }
    if (data.passages && data.passages.length) results.append(passagesDetails(data.passages));
  }

  function showError(ja, en, detail) {
    results.replaceChildren();
    const box = el("div", { className: "notice error", attrs: { role: "alert", id: "error" } });
    box.append(bilingual(ja, en, "p"));
    if (detail) box.append(el("p", { className: "detail", text: detail }));
    results.append(box);
    setStatus("failed", "エラー", "error");
  }

  async function ask(question, k, push) {
    question = question.trim();
    if (!question) {
      input.focus();
      return;
    }
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    const url = "/?q=" + encodeURIComponent(question) + "&k=" + encodeURIComponent(k);
    if (push && location.pathname + location.search !== url) history.pushState({ q: question, k }, "", url);
    else history.replaceState({ q: question, k }, "", url);
    document.title = question + " — kotae 答え";
    setStatus("loading", "考えています…", "Thinking…");
    results.setAttribute("aria-busy", "true");
    form.classList.add("busy");
    try {
      const response = await api("/api/ask", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ question, top_k: Number(k) }),
        signal: controller.signal,
      });
      const data = await readJson(response);
      if (response.ok && data && Array.isArray(data.answers)) {
        render(data);
      } else if (response.status >= 500) {
        showError(
          "サーバーで問題が起きたため、答えられませんでした。しばらくしてからもう一度お試しください。",
          "The server failed while answering. Please try again later.",
          data && data.error ? oneLine(data.error) : "HTTP " + response.status
        );
      } else {
        showError(
          "この質問は受け付けられませんでした。",
          "The question was not accepted.",
          data && data.error ? oneLine(data.error) : "HTTP " + response.status
        );
      }
    } catch (error) {
      if (error.name === "AbortError") return;
      showError("サーバーに接続できませんでした。", "Could not reach the server.", oneLine(error.message));
    } finally {
      if (inFlight === controller) {
        inFlight = null;
        results.setAttribute("aria-busy", "false");
        form.classList.remove("busy");
      }
    }
  }

  // Enter asks, except while an IME composition is in progress: there Enter confirms the
  // kana-kanji conversion. isComposing covers most browsers; keyCode 229 covers Safari, which
  // sends compositionend before the keydown of that Enter.
  input.addEventListener("compositionstart", () => {
    composing = true;
  });
  input.addEventListener("compositionend", () => {
    composing = false;
  });
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    if (event.isComposing || composing) return; // the IME's Enter: it confirms the conversion
    event.preventDefault(); // no implicit form submission: asked here, once
    if (event.keyCode === 229) return; // Safari: the Enter that just ended a composition
    ask(input.value, topK.value, true);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (composing) return;
    ask(input.value, topK.value, true);
  });
  window.addEventListener("popstate", (event) => {
    const state = event.state || {};
    const params = new URLSearchParams(location.search);
    input.value = state.q || params.get("q") || "";
    if (input.value.trim()) ask(input.value, state.k || params.get("k") || topK.value, false);
    else {
      results.replaceChildren();
      status.replaceChildren();
    }
  });

  input.focus();
  const initial = new URLSearchParams(location.search).get("q");
  if (initial && initial.trim()) {
    input.value = initial;
    ask(initial, topK.value, false);
  }
})();
