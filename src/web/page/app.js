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
    wantSignIn: false,  // a sign-in pressed, not yet answered
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
      // A sign-in pressed while the socket was still opening goes out now.
      if (state.nick && (state.named || state.wantSignIn)) signIn(state.named);
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
        dmLine(from, to, +ts, text, state.historyLeft.has(fold("@" + other)));
        break;
      }
      case "key": {
        const [nick, bundle] = fields(rest, 2);
        if (!keyLine(nick, bundle)) sys(state.view, "key " + nick + ": " + bundle);
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
      case "names": case "online": case "room": case "whois": case "found":
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
          state.wantSignIn = false;
          $("signin-error").textContent = "";
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
        if (what === "registered" || what === "login") publishKey();
        break;
      case "current": {
        const m = /talking in (\S+)/.exec(text);
        state.serverCurrent = m ? m[1] : "";
        break;
      }
      case "created": case "pong": case "format": case "where": case "rooms": case "who": case "key":
        break;
      default:
        if (text) sys(state.view, text);
    }
  }

  function errLine(code, text) {
    if (!state.named) {
      state.wantSignIn = false;
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
    openEnvelope(v, nick, env).catch((e) => ({ error: "an envelope that could not be opened (" + e.name + ")" })).then((r) => {
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

  // ---- encrypted direct messages (chatc(1), DIRECT MESSAGE ENVELOPE) -------

  const lp = (nick) => { const b = te.encode(fold(nick)); return cat(new Uint8Array([b.length]), b); };
  const dmHeader = (a, b) => cat(te.encode("chatd-dm-v1"), lp(a), lp(b));
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const ZERO12 = new Uint8Array(12);
  const dmSeen = new Set(); // message ids, this tab
  const keyWaiters = new Map(); // folded nick -> [resolve]

  let identity = null; // { ed, edPub, x, xPub }
  async function loadIdentity() {
    if (identity) return identity;
    if (!cryptoOk) return null;
    try {
      let saved = JSON.parse(localStorage.getItem("chatd.identity") || "null");
      if (!saved) {
        const ed = await subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
        const x = await subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
        saved = {
          ed: await subtle.exportKey("jwk", ed.privateKey),
          edPub: b64url(new Uint8Array(await subtle.exportKey("raw", ed.publicKey))),
          x: await subtle.exportKey("jwk", x.privateKey),
          xPub: b64url(new Uint8Array(await subtle.exportKey("raw", x.publicKey))),
        };
        localStorage.setItem("chatd.identity", JSON.stringify(saved));
      }
      identity = {
        ed: await subtle.importKey("jwk", saved.ed, { name: "Ed25519" }, false, ["sign"]),
        edPub: unb64url(saved.edPub),
        x: await subtle.importKey("jwk", saved.x, { name: "X25519" }, false, ["deriveBits"]),
        xPub: unb64url(saved.xPub),
      };
      return identity;
    } catch (e) {
      return null; // this browser's WebCrypto has no Ed25519 or X25519
    }
  }

  // After a login or registration: publish the signed key bundle.
  async function publishKey() {
    const id = await loadIdentity();
    if (!id) { sys(state.view, "this browser cannot encrypt direct messages (no Ed25519/X25519 in its WebCrypto, or not a secure page)"); return; }
    const sig = new Uint8Array(await subtle.sign({ name: "Ed25519" }, id.ed, cat(te.encode("chatd-key-v1"), lp(state.nick), id.xPub)));
    send("/key set K1." + b64url(cat(id.edPub, id.xPub, sig)));
    state.keyPublished = true;
  }

  async function verifyBundle(nick, bundle) {
    if (!bundle.startsWith("K1.")) return null;
    const raw = unb64url(bundle.slice(3));
    if (!raw || raw.length !== 128) return null;
    const ed = raw.slice(0, 32), x = raw.slice(32, 64), sig = raw.slice(64);
    try {
      const k = await subtle.importKey("raw", ed, { name: "Ed25519" }, false, ["verify"]);
      const ok = await subtle.verify({ name: "Ed25519" }, k, sig, cat(te.encode("chatd-key-v1"), lp(nick), x));
      return ok ? { ed, x } : null;
    } catch (e) { return null; }
  }

  function dmPins() {
    try { return JSON.parse(localStorage.getItem("chatd.dmpins") || "{}"); } catch (e) { return {}; }
  }

  // The peer's key as pinned here: looked up once a page load, pinned on
  // first use; a different key later is refused until trusted by hand.
  async function peerKey(nick) {
    const who = fold(nick);
    if (who === fold(state.nick) && identity) return { ed: identity.edPub, x: identity.xPub };
    const v = view("@" + nick);
    if (v.peer !== undefined) return v.peer;
    const bundle = await new Promise((resolve) => {
      const list = keyWaiters.get(who) || [];
      list.push(resolve);
      keyWaiters.set(who, list);
      if (list.length === 1) send("/key " + nick);
      setTimeout(() => resolve(null), 10000);
    });
    if (!bundle || bundle === "-") { v.peer = null; v.keyState = "no key"; return null; }
    const key = await verifyBundle(nick, bundle);
    if (!key) { v.peer = null; v.keyState = "bad bundle"; sys(v.name, nick + "'s published key has a bad signature: not used", true); return null; }
    const dp = dmPins();
    const got = hex(key.ed) + hex(key.x);
    if (dp[who] && dp[who] !== got) {
      v.peer = null;
      v.keyState = "changed";
      sys(v.name, nick + "'s key changed since it was pinned: nothing is sent to or trusted from the new key. Compare safety numbers, then type /trust " + nick, true);
      return null;
    }
    if (!dp[who]) {
      dp[who] = got;
      localStorage.setItem("chatd.dmpins", JSON.stringify(dp));
      const rp = pins();
      if (!rp[who]) { rp[who] = hex(key.ed); localStorage.setItem("chatd.pins", JSON.stringify(rp)); }
    }
    v.peer = key;
    v.keyState = "pinned";
    if (identity) v.safety = await safetyNumber(state.nick, identity.edPub, nick, key.ed);
    renderHead();
    return key;
  }

  function keyLine(nick, bundle) {
    const who = fold(nick);
    const list = keyWaiters.get(who);
    if (!list) return false;
    keyWaiters.delete(who);
    for (const r of list) r(bundle);
    return true;
  }

  async function safetyNumber(a, edA, b, edB) {
    const users = [[te.encode(fold(a)), edA], [te.encode(fold(b)), edB]];
    users.sort((p, q) => {
      for (let i = 0; i < Math.min(p[0].length, q[0].length); i++) if (p[0][i] !== q[0][i]) return p[0][i] - q[0][i];
      return p[0].length - q[0].length;
    });
    const parts = [te.encode("chatd-safety-v1")];
    for (const [n, ed] of users) parts.push(new Uint8Array([n.length]), n, ed);
    const d = new Uint8Array(await subtle.digest("SHA-256", cat(...parts)));
    const groups = [];
    for (let g = 0; g < 6; g++) {
      let v = 0n;
      for (let i = 0; i < 5; i++) v = (v << 8n) | BigInt(d[g * 5 + i]);
      groups.push(String(v % 100000n).padStart(5, "0"));
    }
    return groups.join(" ");
  }

  async function slotKey(shared, E, X) {
    const ikm = await subtle.importKey("raw", shared, "HKDF", false, ["deriveBits"]);
    const bits = await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: te.encode("chatd-dm-v1"),
      info: cat(te.encode("slot"), Z, E, X) }, ikm, 256);
    return subtle.importKey("raw", bits, "AES-GCM", false, ["encrypt", "decrypt"]);
  }

  async function x25519(priv, pubRaw) {
    const pub = await subtle.importKey("raw", pubRaw, { name: "X25519" }, false, []);
    return new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pub }, priv, 256));
  }

  async function sealDm(to, key, kind, text) {
    const id = await loadIdentity();
    const e = await subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
    const E = new Uint8Array(await subtle.exportKey("raw", e.publicKey));
    const K = crypto.getRandomValues(new Uint8Array(32));
    const n = crypto.getRandomValues(new Uint8Array(12));
    const mid = crypto.getRandomValues(new Uint8Array(16));
    const body = new Uint8Array(10 + 0);
    body[0] = 1;
    body[1] = kind.charCodeAt(0);
    new DataView(body.buffer).setBigUint64(2, BigInt(Date.now()));
    const full = cat(body, te.encode(text));
    const head = dmHeader(state.nick, to);
    const sig = new Uint8Array(await subtle.sign({ name: "Ed25519" }, id.ed, cat(head, E, mid, full)));
    const kk = await subtle.importKey("raw", K, "AES-GCM", false, ["encrypt"]);
    let out = E;
    for (const X of [key.x, id.xPub]) {
      const sk = await slotKey(await x25519(e.privateKey, X), E, X);
      const slot = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: ZERO12, additionalData: head }, sk, K));
      out = cat(out, slot);
    }
    const ct = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: n, additionalData: cat(head, out) }, kk, cat(mid, sig, full)));
    return "D1." + b64url(cat(out, n, ct));
  }

  async function openDmEnvelope(from, to, env) {
    const id = await loadIdentity();
    if (!id) return { error: "an encrypted message this browser cannot open (no Ed25519/X25519, or not a secure page)" };
    const raw = unb64url(env.slice(3));
    if (!raw || raw.length < 32 + 96 + 12 + 16 + 80 + 10) return { error: "malformed envelope" };
    const E = raw.slice(0, 32), n = raw.slice(128, 140), sealed = raw.slice(140);
    const head = dmHeader(from, to);
    let K = null;
    try {
      const sk = await slotKey(await x25519(id.x, E), E, id.xPub);
      for (const slot of [raw.slice(32, 80), raw.slice(80, 128)]) {
        try { K = new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: ZERO12, additionalData: head }, sk, slot)); break; } catch (e) { /* the other slot */ }
      }
    } catch (e) { return { error: "malformed envelope" }; }
    if (!K) return { error: "a message not for this browser's key (or re-addressed) was rejected" };
    let inner;
    try {
      const kk = await subtle.importKey("raw", K, "AES-GCM", false, ["decrypt"]);
      inner = new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: n, additionalData: cat(head, raw.slice(0, 128)) }, kk, sealed));
    } catch (e) { return { error: "tampered message rejected" }; }
    if (inner.length < 16 + 64 + 10) return { error: "malformed envelope" };
    const mid = inner.slice(0, 16), sig = inner.slice(16, 80), body = inner.slice(80);
    const sender = await peerKey(from);
    if (!sender) return { error: "a message from " + from + " whose key is not trusted here was not shown" };
    const k = await subtle.importKey("raw", sender.ed, { name: "Ed25519" }, false, ["verify"]);
    if (!(await subtle.verify({ name: "Ed25519" }, k, sig, cat(head, E, mid, body)))) return { error: "a forged message from " + from + " was rejected" };
    if (body[0] !== 1 || (body[1] !== 0x74 && body[1] !== 0x61)) return { error: "an envelope of a kind this page does not know" };
    let text;
    try { text = td.decode(body.subarray(10)); } catch (e) { return { error: "malformed envelope" }; }
    return { id: hex(mid), kind: String.fromCharCode(body[1]), ts: Number(new DataView(body.buffer, body.byteOffset).getBigUint64(2)), text };
  }

  function dmLine(from, to, ts, text, history) {
    const other = fold(from) === fold(state.nick) ? to : from;
    const v = view("@" + other);
    if (!text.startsWith("D1.")) {
      addLine(v, { kind: "dm", nick: from, ts, text, plainDm: true, history });
      countHistory(v);
      return;
    }
    const l = { kind: "dm", nick: from, ts, text: "", history };
    addLine(v, l);
    countHistory(v);
    openDmEnvelope(from, to, text).catch((e) => ({ error: "a message that could not be opened (" + e.name + ": " + e.message + ")" })).then((r) => {
      if (r.error) { l.kind = "sys"; l.err = true; l.text = r.error; }
      else if (dmSeen.has(r.id)) {
        if (history) v.lines.splice(v.lines.indexOf(l), 1);
        else { l.kind = "sys"; l.err = true; l.text = "a replayed message from " + from + " was refused"; }
      } else if (!history && Math.abs(r.ts - Date.now()) > STALE_MS) {
        l.kind = "sys"; l.err = true; l.text = "a message from " + from + (r.ts > Date.now() ? " from the future" : " sealed too long ago") + " was refused";
      } else {
        dmSeen.add(r.id);
        l.text = r.kind === "a" ? "* " + r.text : r.text;
        l.e2e = "e2e verified";
        if (!history && fold(from) !== fold(state.nick)) notifyOf(v, l);
      }
      if (v.name === state.view) renderLog(true);
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
    const dmState = v && v.dm ? (v.peer && identity ? "end-to-end encrypted; safety number " + v.safety : "not end-to-end encrypted") : "";
    $("room-topic").textContent = v ? clean(v.topic || (v.dm ? dmState : (v.present + 1) + " here")) : "";
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
    if (state.mode === "login" && state.keyPublished) peerKey(nick);
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
        if (line.startsWith("/trust")) { trust(v); continue; }
        if (line.startsWith("/") && !line.startsWith("//")) { send(line); continue; }
        try { await sendDm(v, line.startsWith("//") ? line.slice(1) : line); }
        catch (e) { sys(v.name, "not sent: sealing failed (" + e.name + ": " + e.message + ")", true); }
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

  // Encrypted when both sides can; otherwise nothing goes until the person
  // says, by sending the same line again, that it may go in the clear.
  async function sendDm(v, text) {
    const to = v.name.slice(1);
    const loggedIn = state.mode === "login" && state.keyPublished;
    const key = loggedIn ? await peerKey(to) : null;
    if (key && identity) {
      let kind = "t", body = text;
      if (text.startsWith("/me ")) { kind = "a"; body = text.slice(4); }
      send("/dm " + to + " " + (await sealDm(to, key, kind, body)));
      return;
    }
    if (v.keyState === "changed") {
      sys(v.name, "not sent: " + to + "'s key changed; compare safety numbers, then /trust " + to, true);
      return;
    }
    if (!v.plainOk && v.plainPending !== text) {
      v.plainPending = text;
      const why = !loggedIn ? "you are not logged in to a registered nick, so " + to + " could not check who sent it"
        : to + " has no end-to-end key, so the server could read it";
      sys(v.name, "not sent: " + why + ". Send the same line again to send it unencrypted.", true);
      $("text").value = text;
      return;
    }
    v.plainOk = true;
    v.plainPending = null;
    send("/dm " + to + " " + text);
  }

  // `/trust nick` in a conversation: forget the pin, take the key now published.
  function trust(v) {
    const who = fold(v.name.slice(1));
    const p = dmPins();
    delete p[who];
    localStorage.setItem("chatd.dmpins", JSON.stringify(p));
    const rp = pins();
    delete rp[who];
    localStorage.setItem("chatd.pins", JSON.stringify(rp));
    v.peer = undefined;
    v.keyState = undefined;
    peerKey(v.name.slice(1)).then((k) => sys(v.name, k ? "now trusting the key " + v.name.slice(1) + " publishes; safety number " + v.safety : "no key to trust"));
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
      state.wantSignIn = true;
      if (state.ws && state.ws.readyState === WebSocket.OPEN) signIn(false);
      else $("signin-error").textContent = "connecting: you are signed in as soon as the connection opens";
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
    // The sign-in buttons start disabled so that a press before this script
    // ran cannot submit the form natively (a page reload that loses the nick).
    for (const id of ["guest", "login", "register"]) $(id).disabled = false;
    connect();
  }

  // For the test suite, which reads what a person would see.
  window.chatdState = () => ({ named: state.named, nick: state.nick, view: state.view,
    connected: !!(state.ws && state.ws.readyState === 1) });

  document.addEventListener("DOMContentLoaded", setup);
})();
