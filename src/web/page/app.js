// chatd's browser client. It speaks the machine format (chatd(8),
// "Machine format") over a WebSocket, one line per text frame, and trusts
// neither the server nor other members: everything shown is set as text
// (never as HTML) after control and bidi characters are taken out; a room
// it holds a key for never gets a plain line from it; envelopes are judged
// by the local clock. Encrypted rooms use the envelope of chatc(1) through
// WebCrypto; their secrets stay in this tab (sessionStorage), never sent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const te = new TextEncoder();
  const td = new TextDecoder("utf-8", { fatal: true });

  // ---- state -------------------------------------------------------------

  const state = {
    ws: null,
    named: false,       // the server took our nick
    nick: "",
    password: null,     // kept in memory only, to log in again on reconnect
    mode: "guest",      // guest | login | register
    serverCurrent: "",  // where the server sends our plain lines
    view: "",           // the room or "@nick" shown
    views: new Map(),   // folded name -> view
    backoff: 500,
    retry: null,
    pendingInvite: null,
    pendingSecretRoom: false,
    historyLeft: new Map(), // room -> lines still to come in a history block
    notify: localStorage.getItem("chatd.notify") === "on",
  };

  const fold = (s) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());

  // Control characters, bidi overrides and isolates, and line or paragraph
  // separators: none of them may reach the page, where they could forge or
  // reorder what someone appears to have said.
  const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;
  const clean = (s) => String(s).replace(UNSAFE, "\ufffd");
  const cleanName = (s) => clean(s).slice(0, 64);

  function view(name, create = true) {
    const key = fold(name);
    let v = state.views.get(key);
    if (!v && create) {
      v = {
        name, dm: name.startsWith("@"), lines: [], seen: new Set(), unread: 0, mention: false,
        topic: "", joined: false, key: null, secret: null, nonces: new Set(), more: true,
        loading: false, gapFrom: null, present: 0,
      };
      state.views.set(key, v);
    }
    return v;
  }

  // ---- the connection ----------------------------------------------------

  function setStatus(text, down) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("down", !!down);
  }

  function connect() {
    clearTimeout(state.retry);
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    let ws;
    try {
      ws = new WebSocket(url, "chatd.v1");
    } catch (e) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    setStatus("connecting");
    ws.onopen = () => {
      setStatus("connected");
      state.backoff = 500;
      if (state.nick && state.named) signIn(true);
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") handleLine(ev.data);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      const was = state.named;
      setStatus(was ? "disconnected: reconnecting" : "disconnected", true);
      for (const v of state.views.values()) {
        if (v.joined) v.rejoin = true;
        v.joined = false;
      }
      scheduleReconnect();
    };
  }

  // 0.5 s doubling to 30 s, each wait varied by up to half, as chatc does.
  function scheduleReconnect() {
    const wait = state.backoff * (0.5 + Math.random());
    state.backoff = Math.min(state.backoff * 2, 30000);
    state.retry = setTimeout(connect, wait);
  }

  function send(line) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      sys(state.view, "not connected: wait for the connection to come back", true);
      return false;
    }
    // One protocol line per frame: a newline inside would be a second line.
    state.ws.send(line.replace(/[\r\n]/g, " "));
    return true;
  }

  function signIn(again) {
    const nick = state.nick;
    if (state.mode === "login" && state.password !== null) {
      send("/login " + nick + " " + state.password);
    } else {
      send("/nick " + nick);
    }
    if (again) {
      for (const v of state.views.values()) {
        if (v.rejoin && !v.dm) send("/join " + v.name);
      }
    }
  }

  // ---- incoming lines ----------------------------------------------------

  // `n` fields that never hold a space, then free text.
  function fields(rest, n) {
    const out = [];
    let s = rest;
    for (let i = 0; i < n; i++) {
      const sp = s.indexOf(" ");
      if (sp < 0) { out.push(s); s = ""; continue; }
      out.push(s.slice(0, sp));
      s = s.slice(sp + 1);
    }
    out.push(s);
    return out;
  }

  function handleLine(line) {
    const sp = line.indexOf(" ");
    const kind = sp < 0 ? line : line.slice(0, sp);
    const rest = sp < 0 ? "" : line.slice(sp + 1);
    switch (kind) {
      case "msg": case "act": {
        const [room, nick, ts, text] = fields(rest, 3);
        roomLine(room, { kind, nick, ts: +ts, text });
        break;
      }
      case "image": case "file": {
        const [room, nick, ts, mime, size, name, data] = fields(rest, 6);
        roomLine(room, { kind, nick, ts: +ts, mime, size: +size, name, data });
        break;
      }
      case "enc": {
        const [room, nick, ts, env] = fields(rest, 3);
        encLine(room, nick, +ts, env);
        break;
      }
      case "dm": {
        const [from, to, ts, text] = fields(rest, 3);
        const other = fold(from) === fold(state.nick) ? to : from;
        const v = view("@" + other);
        addLine(v, { kind: "dm", nick: from, ts: +ts, text, plainDm: true, history: state.historyLeft.has(fold(v.name)) });
        countHistory(v);
        break;
      }
      case "history": {
        const [room, count] = fields(rest, 2);
        const v = view(room);
        state.historyLeft.set(fold(room), +count);
        v.block = [];
        if (+count === 0) historyDone(v);
        break;
      }
      case "join": {
        const [room, nick] = fields(rest, 2);
        if (fold(nick) === fold(state.nick)) joined(room);
        else { const v = view(room); v.present++; if (v.name === state.view) sys(room, nick + " joined"); }
        break;
      }
      case "part": {
        const [room, nick, reason] = fields(rest, 2);
        const v = view(room, false);
        if (!v) break;
        if (fold(nick) === fold(state.nick)) {
          v.joined = false;
          sys(room, "you left " + room + (reason ? " (" + reason + ")" : ""));
          renderSide();
        } else {
          v.present = Math.max(0, v.present - 1);
          sys(room, nick + " left" + (reason ? ": " + reason : ""));
        }
        break;
      }
      case "quit": {
        const [nick, reason] = fields(rest, 1);
        if (state.view && !state.view.startsWith("@")) sys(state.view, nick + " quit" + (reason ? ": " + reason : ""));
        break;
      }
      case "nick": {
        const [old, nw] = fields(rest, 2);
        if (fold(old) === fold(state.nick)) state.nick = nw;
        if (state.view) sys(state.view, old + " is now " + nw);
        break;
      }
      case "topic": {
        const [room, nick, text] = fields(rest, 2);
        const v = view(room);
        v.topic = text;
        if (nick !== "-" && text) sys(room, nick + " set the topic: " + text);
        renderHead();
        break;
      }
      case "present": {
        const [room, total] = fields(rest, 2);
        view(room).present = +total;
        renderHead();
        break;
      }
      case "ok": okLine(...fields(rest, 1)); break;
      case "err": errLine(...fields(rest, 1)); break;
      case "info": infoLine(...fields(rest, 1)); break;
      case "names": case "online": case "room": case "whois": case "found": case "key":
        sys(state.view, line.replace(/^\S+ /, kind + ": "));
        break;
      default:
        break; // kinds this page does not know are ignored, as chatd(8) asks
    }
  }

  function okLine(what, text) {
    switch (what) {
      case "nick": case "login": case "registered":
        if (!state.named) {
          state.named = true;
          $("app").classList.remove("signed-out");
          localStorage.setItem("chatd.nick", state.nick);
          if (state.mode === "register" && what === "nick") {
            send("/register " + state.password);
          }
          if (state.pendingInvite) {
            const inv = state.pendingInvite;
            state.pendingInvite = null;
            joinInput(inv);
          }
          $("text").focus();
        }
        if (what === "registered") { state.mode = "login"; sys(state.view, text); }
        break;
      case "current": {
        const m = /talking in (\S+)/.exec(text);
        state.serverCurrent = m ? m[1] : "";
        break;
      }
      case "created": case "pong": case "format": case "where": case "rooms": case "who":
        break;
      default:
        if (text) sys(state.view, text);
    }
  }

  function errLine(code, text) {
    if (!state.named) {
      $("signin-error").textContent = clean(text);
      return;
    }
    sys(state.view, text, true);
  }

  function infoLine(code, text) {
    if (code === "welcome" || code === "history-more") return;
    sys(state.view || "", text);
  }

  function joined(room) {
    const v = view(room);
    const wasRejoin = !!v.rejoin;
    v.joined = true;
    v.rejoin = false;
    if (wasRejoin && v.lines.length) v.gapFrom = newest(v);
    if (state.pendingSecretRoom && room.startsWith("~")) {
      state.pendingSecretRoom = false;
      const secret = randomSecret();
      setSecret(v, secret).then(() => {
        sys(room, "end-to-end encrypted: share the invite link (Copy invite link); the server never sees its secret");
        renderHead();
      });
    } else if (v.secret && !v.key) {
      setSecret(v, v.secret);
    }
    if (!wasRejoin || !state.view) show(room);
    renderSide();
  }

  function newest(v) {
    return v.lines.length ? v.lines[v.lines.length - 1].ts : 0;
  }

  function roomLine(room, l) {
    const v = view(room);
    const left = state.historyLeft.get(fold(room));
    if (left !== undefined) l.history = true;
    if (v.key && l.kind !== "enc") l.unencrypted = true;
    addLine(v, l);
    countHistory(v);
  }

  function countHistory(v) {
    const key = fold(v.name);
    const left = state.historyLeft.get(key);
    if (left === undefined) return;
    if (left <= 1) { state.historyLeft.delete(key); historyDone(v); }
    else state.historyLeft.set(key, left - 1);
  }

  // A history block ended. After a reconnect, what was missed between the
  // last line shown and the first line replayed is fetched page by page,
  // so nothing is lost; lines already shown are skipped by their times (a
  // room's times are unique and increasing), so nothing is repeated.
  function historyDone(v) {
    v.loading = false;
    const got = v.block || [];
    v.block = null;
    if (v.older) {
      v.older = false;
      if (got.length === 0) v.more = false;
    }
    if (v.gapFrom !== null) {
      const oldest = got.length ? Math.min(...got) : null;
      if (oldest !== null && oldest > v.gapFrom) {
        send("/history " + v.name + " 50 before " + oldest);
        return;
      }
      v.gapFrom = null;
    }
  }

  function addLine(v, l) {
    if (v.block && l.ts) v.block.push(l.ts);
    const id = l.ts ? String(l.ts) + (l.kind === "dm" ? " " + fold(l.nick) : "") : null;
    if (id && v.seen.has(id)) return;
    if (id) v.seen.add(id);
    l.mention = !l.history && l.nick && fold(l.nick) !== fold(state.nick) && mentions(l.text || "");
    // Keep lines in time order: history pages arrive older than what is shown.
    let i = v.lines.length;
    while (i > 0 && l.ts && v.lines[i - 1].ts > l.ts) i--;
    v.lines.splice(i, 0, l);
    if (v.lines.length > 5000) v.lines.splice(0, v.lines.length - 5000);
    const here = v.name === state.view && !document.hidden;
    if (!l.history && !here && l.kind !== "sys") {
      v.unread++;
      if (l.mention || v.dm) v.mention = true;
    }
    if (l.mention || (v.dm && !l.history && fold(l.nick) !== fold(state.nick))) notifyOf(v, l);
    if (v.name === state.view) {
      if (i === v.lines.length - 1) appendLineEl(l); else renderLog(true);
    }
    renderSide();
  }

  function mentions(text) {
    if (!state.nick) return false;
    const n = state.nick.replace(/[-]/g, "\\-");
    return new RegExp("(^|[^A-Za-z0-9_-])" + n + "($|[^A-Za-z0-9_-])", "i").test(text);
  }

  function notifyOf(v, l) {
    if (!state.notify || !("Notification" in window) || Notification.permission !== "granted") return;
    if (!document.hidden && v.name === state.view) return;
    try {
      new Notification(cleanName(l.nick) + " in " + cleanName(v.name), { body: clean(l.text || "").slice(0, 200), tag: v.name });
    } catch (e) { /* some browsers allow notifications only from a service worker */ }
  }

  function sys(room, text, isErr) {
    const v = view(room || state.view || "#lobby");
    const l = { kind: "sys", text, ts: 0, err: !!isErr, at: Date.now() };
    v.lines.push(l);
    if (v.name === state.view) appendLineEl(l);
  }

  // ---- end-to-end encryption (chatc(1), ENVELOPE FORMAT) -------------------

  const subtle = window.crypto && window.crypto.subtle;
  const cryptoOk = !!(subtle && window.isSecureContext);
  const STALE_MS = 10 * 60 * 1000;

  function b64url(bytes) {
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function unb64url(s) {
    if (!/^[A-Za-z0-9_-]*$/.test(s)) return null;
    const std = s.replace(/-/g, "+").replace(/_/g, "/");
    try {
      const bin = atob(std + "===".slice((std.length + 3) % 4));
      return Uint8Array.from(bin, (c) => c.charCodeAt(0));
    } catch (e) { return null; }
  }
  function b64(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }
  function unb64(s) {
    try { return Uint8Array.from(atob(s), (c) => c.charCodeAt(0)); } catch (e) { return null; }
  }
  const cat = (...parts) => {
    const n = parts.reduce((a, p) => a + p.length, 0);
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  };
  const Z = new Uint8Array([0]);

  function isRandomSecret(s) {
    if (!/^[A-Za-z0-9_-]{43}$/.test(s)) return false;
    const b = unb64url(s);
    return !!b && b.length === 32 && b64url(b) === s;
  }
  function randomSecret() {
    return b64url(crypto.getRandomValues(new Uint8Array(32)));
  }

  async function deriveKey(secret, room) {
    const r = te.encode(fold(room));
    let raw;
    if (isRandomSecret(secret)) {
      const ikm = await subtle.importKey("raw", unb64url(secret), "HKDF", false, ["deriveBits"]);
      raw = await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: te.encode("chatd-e2e-v1"),
        info: cat(te.encode("room key"), Z, r) }, ikm, 256);
    } else {
      const pw = await subtle.importKey("raw", te.encode(secret), "PBKDF2", false, ["deriveBits"]);
      raw = await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", iterations: 600000,
        salt: cat(te.encode("chatd-e2e-v1 passphrase"), Z, r) }, pw, 256);
    }
    const hk = await subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const id = new Uint8Array(await subtle.sign("HMAC", hk, te.encode("chatd-e2e-v1 key id"))).slice(0, 4);
    const aes = await subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
    return { aes, id };
  }

  async function setSecret(v, secret) {
    if (!cryptoOk) {
      sys(v.name, "encrypted rooms need a secure page: open chatd over https (--tls-listen) or on localhost", true);
      return;
    }
    v.secret = secret;
    v.keyReady = deriveKey(secret, v.name).then((k) => { v.key = k; renderHead(); renderSide(); return k; });
    saveSecrets();
    return v.keyReady;
  }

  function saveSecrets() {
    const all = {};
    for (const v of state.views.values()) if (v.secret) all[v.name] = v.secret;
    sessionStorage.setItem("chatd.secrets", JSON.stringify(all));
  }

  function aad(label, room, nick) {
    return cat(te.encode(label), Z, te.encode(fold(room)), Z, te.encode(nick));
  }

  async function seal(v, kind, body) {
    const k = v.key || (await v.keyReady);
    const ts = BigInt(Date.now());
    const head = new Uint8Array(10);
    head[0] = 1;
    head[1] = kind.charCodeAt(0);
    new DataView(head.buffer).setBigUint64(2, ts);
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const ct = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce,
      additionalData: aad("chatd-e2e-v1", v.name, state.nick), tagLength: 128 }, k.aes, cat(head, body)));
    return "E1." + b64url(cat(k.id, nonce, ct));
  }

  function pins() {
    try { return JSON.parse(localStorage.getItem("chatd.pins") || "{}"); } catch (e) { return {}; }
  }

  // Opens an envelope, or says why not; never shows a part of one that failed.
  async function openEnvelope(v, nick, env) {
    const ver = env.slice(0, 3);
    const raw = (ver === "E1." || ver === "E2.") ? unb64url(env.slice(3)) : null;
    if (!raw || raw.length < 42) return { error: "malformed envelope" };
    const k = v.key || (await v.keyReady);
    if (!k) return { error: "no key for this room" };
    const id = raw.subarray(0, 4), nonce = raw.subarray(4, 16), ct = raw.subarray(16);
    if (id.some((b, i) => b !== k.id[i])) return { error: "wrong room key" };
    let pt;
    try {
      pt = new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce,
        additionalData: aad(ver === "E1." ? "chatd-e2e-v1" : "chatd-e2e-v2", v.name, nick), tagLength: 128 }, k.aes, ct));
    } catch (e) { return { error: "tampered envelope rejected" }; }
    let signed = false, verified = false;
    if (ver === "E2.") {
      if (pt.length < 96 + 10) return { error: "malformed envelope" };
      const pub = pt.slice(0, 32), sig = pt.slice(32, 96);
      pt = pt.slice(96);
      const msg = cat(te.encode("chatd-e2e-v2 sig"), Z, te.encode(fold(v.name)), Z, te.encode(fold(nick)), Z, id, nonce, pt);
      let ok = false;
      try {
        const key = await subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
        ok = await subtle.verify({ name: "Ed25519" }, key, sig, msg);
      } catch (e) {
        return { error: "a signed envelope this browser cannot check (no Ed25519 in its WebCrypto)" };
      }
      if (!ok) return { error: "tampered envelope rejected" };
      // Pinned on first use, per nick, in this browser.
      const p = pins(), who = fold(nick), hex = Array.from(pub, (b) => b.toString(16).padStart(2, "0")).join("");
      if (p[who] && p[who] !== hex) return { error: "a message signed by a key that is not " + nick + "'s pinned key was rejected" };
      if (!p[who]) { p[who] = hex; localStorage.setItem("chatd.pins", JSON.stringify(p)); }
      signed = true;
      verified = true;
    }
    if (pt.length < 10 || pt[0] !== 1) return { error: "an envelope of a kind this page does not know" };
    const kind = String.fromCharCode(pt[1]);
    const ts = Number(new DataView(pt.buffer, pt.byteOffset).getBigUint64(2));
    const body = pt.subarray(10);
    try {
      if (kind === "t" || kind === "a") return { kind, ts, text: td.decode(body), signed, verified };
      if (kind === "i" || kind === "f") {
        const nl = body[0];
        const name = td.decode(body.subarray(1, 1 + nl));
        const ml = body[1 + nl];
        if (ml === undefined) return { error: "malformed envelope" };
        const mime = td.decode(body.subarray(2 + nl, 2 + nl + ml));
        const data = body.slice(2 + nl + ml);
        return { kind, ts, name, mime, data, signed, verified };
      }
    } catch (e) { return { error: "malformed envelope" }; }
    return { error: "an envelope of a kind this page does not know" };
  }

  function encLine(room, nick, ts, env) {
    const v = view(room);
    const history = state.historyLeft.has(fold(room));
    const placeholder = { kind: "enc", nick, ts, text: "", history, pendingEnc: true };
    if (!env) {
      placeholder.text = "(an encrypted message too large to keep in history)";
      placeholder.pendingEnc = false;
      addLine(v, placeholder);
      countHistory(v);
      return;
    }
    if (!v.key && !v.keyReady) {
      placeholder.text = "(encrypted: join with the room's secret to read it)";
      placeholder.pendingEnc = false;
      addLine(v, placeholder);
      countHistory(v);
      return;
    }
    addLine(v, placeholder);
    countHistory(v);
    openEnvelope(v, nick, env).then((r) => {
      placeholder.pendingEnc = false;
      if (r.error) { placeholder.kind = "sys"; placeholder.err = true; placeholder.text = nick + ": " + r.error; }
      else {
        const nonce = env.slice(3, 25);
        const now = Date.now();
        if (v.nonces.has(nonce)) {
          if (history) { v.lines.splice(v.lines.indexOf(placeholder), 1); placeholder.text = ""; }
          else { placeholder.kind = "sys"; placeholder.err = true; placeholder.text = "a replayed envelope from " + nick + " was refused"; }
        } else if (!history && (r.ts < now - STALE_MS || r.ts > now + STALE_MS)) {
          placeholder.kind = "sys"; placeholder.err = true;
          placeholder.text = "an envelope from " + nick + (r.ts > now ? " from the future" : " sealed too long ago") + " was refused";
        } else {
          v.nonces.add(nonce);
          placeholder.e2e = r.verified ? "e2e verified" : "e2e";
          if (r.kind === "t") { placeholder.kind = "msg"; placeholder.text = r.text; }
          else if (r.kind === "a") { placeholder.kind = "act"; placeholder.text = r.text; }
          else {
            placeholder.kind = r.kind === "i" ? "image" : "file";
            placeholder.name = r.name; placeholder.mime = r.mime; placeholder.size = r.data.length;
            placeholder.bytes = r.data;
          }
          placeholder.mention = !history && fold(nick) !== fold(state.nick) && mentions(placeholder.text || "");
          if (placeholder.mention) { notifyOf(v, placeholder); if (v.name !== state.view) v.mention = true; }
        }
      }
      if (v.name === state.view) renderLog(true);
      renderSide();
    });
  }

  // ---- rendering ---------------------------------------------------------

  const two = (n) => String(n).padStart(2, "0");
  function when(ts) {
    const d = new Date(ts);
    const now = new Date();
    const hm = two(d.getHours()) + ":" + two(d.getMinutes());
    if (d.toDateString() === now.toDateString()) return hm;
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " + hm;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = clean(text);
    return e;
  }

  function humanSize(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1) + " MB";
    if (n >= 1024) return (n / 1024).toFixed(1) + " KB";
    return n + " B";
  }

  const INLINE = /^image\/(png|jpeg|gif|bmp|webp)$/;

  function lineEl(l) {
    const row = el("div", "line");
    const time = el("span", "time", l.ts ? when(l.ts) : when(l.at || Date.now()));
    if (l.ts) time.title = new Date(l.ts).toString();
    row.append(time);
    if (l.kind === "sys") {
      row.classList.add("sys");
      if (l.err) row.classList.add("err");
      row.append(el("span", "body", l.text));
      return row;
    }
    if (l.mention) row.classList.add("mention");
    const who = el("button", "who", l.kind === "act" ? "* " + l.nick : l.nick);
    who.type = "button";
    who.title = "Message " + clean(l.nick);
    who.addEventListener("click", () => openDm(l.nick));
    row.append(who);
    const body = el("span", "body");
    if (l.kind === "msg" || l.kind === "act" || l.kind === "dm" || l.kind === "enc") {
      body.textContent = clean(l.text);
    } else if (l.kind === "image" || l.kind === "file") {
      const name = cleanName(l.name || "file");
      const bytes = l.bytes || (l.data ? unb64(l.data) : null);
      if (!bytes) {
        body.textContent = "sent " + (l.kind === "image" ? "an image" : "a file") + ": " + name + ", " + clean(l.mime) + ", " + humanSize(l.size) + " (not kept in history)";
      } else {
        if (!l.url) l.url = URL.createObjectURL(new Blob([bytes], { type: INLINE.test(l.mime) ? l.mime : "application/octet-stream" }));
        const a = el("a", "download", name + " (" + humanSize(bytes.length) + ")");
        a.href = l.url;
        a.download = name;
        body.append(a);
        if (l.kind === "image" && INLINE.test(l.mime)) {
          const img = document.createElement("img");
          img.alt = name;
          img.src = l.url;
          img.addEventListener("load", () => stick());
          body.append(img);
        }
      }
    }
    if (l.e2e) body.append(el("span", "tag", "[" + l.e2e + "]"));
    if (l.unencrypted) body.append(el("span", "tag warn", "[UNENCRYPTED]"));
    if (l.plainDm) body.append(el("span", "tag warn", "[not end-to-end encrypted]"));
    row.append(body);
    return row;
  }

  let atBottom = true;
  function stick() {
    const log = $("log");
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function appendLineEl(l) {
    const log = $("log");
    const near = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    log.append(lineEl(l));
    if (near) log.scrollTop = log.scrollHeight;
  }

  function renderLog(keep) {
    const log = $("log");
    const v = view(state.view, false);
    const fromBottom = log.scrollHeight - log.scrollTop;
    log.replaceChildren();
    if (!v) return;
    const frag = document.createDocumentFragment();
    for (const l of v.lines) if (l.kind !== "sys" || l.text) frag.append(lineEl(l));
    log.append(frag);
    if (keep && !atBottom) log.scrollTop = log.scrollHeight - fromBottom;
    else log.scrollTop = log.scrollHeight;
  }

  function renderHead() {
    const v = view(state.view, false);
    $("room-name").textContent = v ? clean(v.name) : "";
    $("room-topic").textContent = v ? clean(v.topic || (v.dm ? "direct messages" : (v.present + 1) + " here")) : "";
    const lock = $("room-lock");
    lock.hidden = !(v && v.key);
    lock.textContent = "end-to-end encrypted";
    $("invite").hidden = !(v && v.secret);
    $("part").hidden = !v || v.dm;
    $("title").textContent = v ? "chatd: " + clean(v.name) : "chatd";
    document.title = (totalUnread() ? "(" + totalUnread() + ") " : "") + (v ? clean(v.name) + " - chatd" : "chatd");
  }

  function totalUnread() {
    let n = 0;
    for (const v of state.views.values()) n += v.unread;
    return n;
  }

  function renderSide() {
    const rooms = $("rooms"), dms = $("dms");
    const mk = (v) => {
      const li = document.createElement("li");
      const b = el("button", v.name === state.view ? "current" : "");
      b.type = "button";
      if (v.unread) b.classList.add("unread");
      if (v.key) b.append(el("span", "lock", "e2e"));
      b.append(el("span", "name", v.name));
      if (v.unread) b.append(el("span", "count" + (v.mention ? " mention" : ""), String(v.unread)));
      b.addEventListener("click", () => { show(v.name); closeSide(); });
      li.append(b);
      return li;
    };
    const list = [...state.views.values()];
    rooms.replaceChildren(...list.filter((v) => !v.dm && (v.joined || v.rejoin)).map(mk));
    dms.replaceChildren(...list.filter((v) => v.dm).map(mk));
    renderHead();
  }

  function show(name) {
    const v = view(name);
    state.view = v.name;
    v.unread = 0;
    v.mention = false;
    atBottom = true;
    renderLog();
    renderSide();
  }

  function openDm(nick) {
    if (!nick || fold(nick) === fold(state.nick)) return;
    show("@" + nick);
    $("text").focus();
  }

  // ---- sending -----------------------------------------------------------

  // Plain lines go to the server's current room: switch it first if the
  // page shows another.
  function toRoom(v, line) {
    if (fold(state.serverCurrent) !== fold(v.name)) {
      send("/join " + v.name);
      state.serverCurrent = v.name;
    }
    return send(line);
  }

  async function submit(text) {
    const v = view(state.view, false);
    if (!v || !text) return;
    for (const line of text.split(/\r?\n/)) {
      if (!line) continue;
      if (v.dm) {
        if (line.startsWith("/") && !line.startsWith("//")) { send(line); continue; }
        send("/dm " + v.name.slice(1) + " " + (line.startsWith("//") ? line.slice(1) : line));
        continue;
      }
      if (v.secret) {
        // Never a plain line into a room we hold a key for.
        let kind = "t", body = line;
        if (line.startsWith("/me ")) { kind = "a"; body = line.slice(4); }
        else if (line.startsWith("//")) body = line.slice(1);
        else if (line.startsWith("/")) { send(line); continue; }
        const env = await seal(v, kind, te.encode(body));
        toRoom(v, "/enc " + env);
        continue;
      }
      toRoom(v, line);
    }
  }

  function trackUpload(total, name) {
    const box = $("upload"), bar = $("upload-bar"), label = $("upload-text");
    box.hidden = false;
    const start = state.ws ? state.ws.bufferedAmount : 0;
    const tick = () => {
      const left = state.ws ? Math.max(0, state.ws.bufferedAmount - start) : 0;
      const done = total ? 1 - left / total : 1;
      bar.value = done;
      label.textContent = clean(name) + ": " + Math.round(done * 100) + "%";
      if (left > 0 && state.ws) setTimeout(tick, 100);
      else setTimeout(() => { box.hidden = true; }, 800);
    };
    tick();
  }

  async function sendFile(file) {
    const v = view(state.view, false);
    if (!v || v.dm) { sys(state.view, "files go to rooms: open a room first", true); return; }
    const bytes = new Uint8Array(await file.arrayBuffer());
    const isImage = INLINE.test(file.type);
    const name = (file.name || (isImage ? "pasted.png" : "file")).replace(/\s+/g, "_").slice(0, 100);
    let line;
    if (v.secret) {
      const nb = te.encode(name).slice(0, 255), mb = te.encode(file.type || "application/octet-stream").slice(0, 255);
      const body = cat(new Uint8Array([nb.length]), nb, new Uint8Array([mb.length]), mb, bytes);
      line = "/enc " + (await seal(v, isImage ? "i" : "f", body));
    } else {
      line = (isImage ? "/image " : "/file ") + name + " " + b64(bytes);
    }
    if (toRoom(v, line)) trackUpload(line.length, name);
  }

  // ---- input -------------------------------------------------------------

  function joinInput(text) {
    let t = text.trim();
    if (!t) return;
    const colon = t.indexOf(":");
    let secret = null;
    if (colon > 0) { secret = t.slice(colon + 1); t = t.slice(0, colon); }
    const code = t.replace(/^~/, "");
    if (secret !== null) {
      if (!cryptoOk) { sys(state.view, "encrypted rooms need a secure page: open chatd over https (--tls-listen) or on localhost", true); return; }
      const name = t.startsWith("#") ? t : "~" + code;
      setSecret(view(name), secret);
    }
    send("/join " + (t.startsWith("#") ? t : code));
  }

  function closeSide() { $("app").classList.remove("side-open"); }

  function rooms() { return [...state.views.values()].filter((v) => v.joined || v.dm); }

  function setup() {
    const theme = localStorage.getItem("chatd.theme") ||
      (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
    document.documentElement.classList.toggle("dark", theme === "dark");
    $("theme").addEventListener("click", () => {
      const dark = !document.documentElement.classList.contains("dark");
      document.documentElement.classList.toggle("dark", dark);
      localStorage.setItem("chatd.theme", dark ? "dark" : "light");
    });
    const nb = $("notify");
    const showNotify = () => { nb.textContent = "Notify: " + (state.notify ? "on" : "off"); nb.setAttribute("aria-pressed", String(state.notify)); };
    showNotify();
    nb.addEventListener("click", async () => {
      if (!state.notify && "Notification" in window) {
        const p = await Notification.requestPermission();
        state.notify = p === "granted";
      } else state.notify = false;
      localStorage.setItem("chatd.notify", state.notify ? "on" : "off");
      showNotify();
    });
    $("secure-note").textContent = cryptoOk
      ? "This page can join end-to-end encrypted rooms."
      : "Encrypted rooms need a secure page: open chatd over https (its --tls-listen port) or on localhost. Plain rooms work here.";
    $("nick").value = localStorage.getItem("chatd.nick") || "";
    try {
      const saved = JSON.parse(sessionStorage.getItem("chatd.secrets") || "{}");
      for (const [room, secret] of Object.entries(saved)) {
        if (typeof secret === "string") view(room).secret = secret;
      }
    } catch (e) { /* nothing saved */ }
    // An invite link: #join=<room>:<secret>. The fragment never reaches the
    // server; it is taken off the address bar at once.
    if (location.hash.startsWith("#join=")) {
      state.pendingInvite = decodeURIComponent(location.hash.slice(6));
      history.replaceState(null, "", location.pathname);
      const note = $("invite-note");
      note.hidden = false;
      note.textContent = "You were invited to " + clean(state.pendingInvite.split(":")[0]) + ": sign in to join.";
    }
    const start = (mode) => (e) => {
      if (e) e.preventDefault();
      const nick = $("nick").value.trim();
      const pw = $("password").value;
      if (!/^[A-Za-z0-9_-]{1,24}$/.test(nick)) { $("signin-error").textContent = "a nick is 1-24 letters, digits, _ or -"; return; }
      if (mode !== "guest" && pw.length < 8) { $("signin-error").textContent = "a password is 8 to 256 characters"; return; }
      $("signin-error").textContent = "";
      state.nick = nick;
      state.mode = mode;
      state.password = mode === "guest" ? null : pw;
      signIn(false);
    };
    $("signin-form").addEventListener("submit", start("guest"));
    $("login").addEventListener("click", start("login"));
    $("register").addEventListener("click", start("register"));
    $("join-form").addEventListener("submit", (e) => {
      e.preventDefault();
      joinInput($("join-input").value);
      $("join-input").value = "";
      closeSide();
    });
    $("new-private").addEventListener("click", () => { send("/join new"); closeSide(); });
    $("new-secret").addEventListener("click", () => {
      if (!cryptoOk) { sys(state.view, "encrypted rooms need a secure page: open chatd over https (--tls-listen) or on localhost", true); return; }
      state.pendingSecretRoom = true;
      send("/join new");
      closeSide();
    });
    $("dm-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const n = $("dm-input").value.trim();
      if (/^[A-Za-z0-9_-]{1,24}$/.test(n)) openDm(n);
      $("dm-input").value = "";
      closeSide();
    });
    $("part").addEventListener("click", () => {
      const v = view(state.view, false);
      if (v && !v.dm) send("/part " + v.name);
    });
    $("invite").addEventListener("click", async () => {
      const v = view(state.view, false);
      if (!v || !v.secret) return;
      const code = v.name.startsWith("~") ? v.name.slice(1) : v.name;
      const link = location.origin + "/#join=" + encodeURIComponent(code + ":" + v.secret);
      try { await navigator.clipboard.writeText(link); sys(v.name, "invite link copied; anyone with it can read this room"); }
      catch (e) { sys(v.name, "invite link: " + link); }
    });
    const text = $("text");
    $("compose").addEventListener("submit", (e) => {
      e.preventDefault();
      const t = text.value;
      text.value = "";
      submit(t);
    });
    text.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("compose").requestSubmit();
      }
    });
    document.addEventListener("keydown", (e) => {
      if (!e.altKey) return;
      const list = rooms();
      const i = list.findIndex((v) => v.name === state.view);
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const next = list[(i + (e.key === "ArrowDown" ? 1 : list.length - 1)) % list.length];
        if (next) show(next.name);
      } else if (e.key === "r" || e.key === "R") {
        e.preventDefault();
        $("join-input").focus();
      }
    });
    $("menu").addEventListener("click", () => $("app").classList.toggle("side-open"));
    $("attach").addEventListener("click", () => $("file").click());
    $("file").addEventListener("change", () => {
      for (const f of $("file").files) sendFile(f);
      $("file").value = "";
    });
    const main = $("main");
    main.addEventListener("dragover", (e) => { e.preventDefault(); main.classList.add("dragging"); });
    main.addEventListener("dragleave", () => main.classList.remove("dragging"));
    main.addEventListener("drop", (e) => {
      e.preventDefault();
      main.classList.remove("dragging");
      for (const f of e.dataTransfer.files) sendFile(f);
    });
    text.addEventListener("paste", (e) => {
      for (const item of e.clipboardData.items) {
        if (item.kind === "file") { const f = item.getAsFile(); if (f) { e.preventDefault(); sendFile(f); } }
      }
    });
    const log = $("log");
    log.addEventListener("scroll", () => {
      atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      const v = view(state.view, false);
      if (log.scrollTop < 60 && v && !v.dm && v.more && !v.loading && v.lines.some((l) => l.ts)) {
        const oldest = v.lines.find((l) => l.ts).ts;
        v.loading = true;
        v.older = true;
        send("/history " + v.name + " 50 before " + oldest);
      }
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.view) show(state.view);
    });
    connect();
  }

  // For the test suite, which reads what a person would see.
  window.chatdState = () => ({ named: state.named, nick: state.nick, view: state.view,
    connected: !!(state.ws && state.ws.readyState === 1) });

  document.addEventListener("DOMContentLoaded", setup);
})();
