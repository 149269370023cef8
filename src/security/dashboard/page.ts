/**
 * The admin dashboard: one self-contained page (HTML + a script + a stylesheet, all served from
 * /admin/ by routes/dashboard.ts, no external assets) that signs in and drives the admin API with
 * the HttpOnly session cookie and the x-gatehouse-csrf header. Kept as TypeScript string modules
 * so `tsc` carries them into dist/ with the rest.
 *
 * The script builds every piece of data into the page with textContent, never innerHTML, and the
 * Content-Security-Policy allows only these same-origin files: no inline script, no eval.
 */

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Gatehouse admin</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/admin/dashboard.css">
<script src="/admin/dashboard.js" defer></script>
</head>
<body>
<header><h1>Gatehouse admin</h1><span id="who"></span><button id="logout" hidden>Sign out</button></header>
<main>
<section id="login" hidden>
  <form id="login-form">
    <h2>Sign in</h2>
    <label>Name <input id="login-name" name="name" autocomplete="username" required></label>
    <label>Password <input id="login-password" name="password" type="password" autocomplete="current-password" required></label>
    <button type="submit" id="login-submit">Sign in</button>
    <p id="login-error" class="error" role="alert"></p>
  </form>
</section>
<section id="app" hidden>
  <nav id="tabs">
    <button data-tab="users">Users</button>
    <button data-tab="devices">Devices</button>
    <button data-tab="sessions">Sessions</button>
    <button data-tab="commands">Commands</button>
    <button data-tab="audit">Audit log</button>
    <button data-tab="logs">Server log</button>
  </nav>
  <p id="status" role="status"></p>
  <div id="view"></div>
</section>
</main>
</body>
</html>
`

export const DASHBOARD_CSS = `body{font-family:system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{display:flex;gap:1em;align-items:center;padding:.6em 1em;background:#1b2a3a;color:#fff}
header h1{font-size:1.1em;margin:0;flex:1}
main{padding:1em}
form{display:flex;flex-direction:column;gap:.6em;max-width:22em}
nav{display:flex;gap:.3em;margin-bottom:.8em}
nav button[aria-selected=true]{background:#1b2a3a;color:#fff}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #d6dae0;padding:.3em .5em;text-align:left;font-size:.9em;vertical-align:top}
th{background:#eceff3}
td button{margin-right:.3em}
.error{color:#b00020}
.muted{color:#68717d}
`

export const DASHBOARD_JS = `'use strict'
;(function () {
  var csrf = sessionStorage.getItem('gh_csrf') || ''
  var me = null
  var $ = function (id) { return document.getElementById(id) }

  function el(tag, text, attrs) {
    var e = document.createElement(tag)
    if (text !== undefined && text !== null) e.textContent = String(text)
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k])
    return e
  }
  function when(ms) { return ms ? new Date(ms).toISOString().replace('T', ' ').slice(0, 19) : '' }
  function status(text, isError) { var s = $('status'); s.textContent = text || ''; s.className = isError ? 'error' : 'muted' }

  function api(method, path, body) {
    var headers = { accept: 'application/json' }
    if (method !== 'GET') { headers['content-type'] = 'application/json'; headers['x-gatehouse-csrf'] = csrf }
    return fetch(path, { method: method, headers: headers, credentials: 'same-origin', body: method === 'GET' ? undefined : JSON.stringify(body || {}) })
      .then(function (r) {
        if (r.status === 204) return null
        return r.json().then(function (j) {
          if (r.status === 401) { showLogin(); throw new Error('signed out') }
          if (!r.ok) throw new Error((j && j.error && (j.error.code + ': ' + j.error.message)) || ('HTTP ' + r.status))
          return j
        })
      })
  }

  function table(columns, rows, actions) {
    var t = el('table')
    var head = el('tr')
    columns.forEach(function (c) { head.appendChild(el('th', c[0])) })
    if (actions) head.appendChild(el('th', 'Actions'))
    t.appendChild(head)
    rows.forEach(function (row) {
      var tr = el('tr')
      columns.forEach(function (c) { tr.appendChild(el('td', c[1](row))) })
      if (actions) { var td = el('td'); actions(row, td); tr.appendChild(td) }
      t.appendChild(tr)
    })
    if (rows.length === 0) { var tr = el('tr'); var td = el('td', 'nothing yet', { colspan: String(columns.length + (actions ? 1 : 0)) }); tr.appendChild(td); t.appendChild(tr) }
    return t
  }
  function button(label, onClick, attrs) { var b = el('button', label, attrs); b.addEventListener('click', onClick); return b }
  function show(node) { var v = $('view'); v.replaceChildren(node) }

  var views = {
    users: function () {
      return api('GET', '/admin/v1/users?limit=500').then(function (r) {
        show(table([['Name', function (u) { return u.name }], ['Groups', function (u) { return u.groups.join(', ') }],
          ['Known from', function (u) { return u.sources.join(', ') }], ['Devices', function (u) { return u.devices }],
          ['Active enrollments', function (u) { return u.activeEnrollments }]], r.items))
      })
    },
    devices: function () {
      return api('GET', '/admin/v1/devices?limit=500').then(function (r) {
        show(table([['User', function (d) { return d.userName }], ['Device', function (d) { return d.deviceId }],
          ['State', function (d) { return d.state }], ['Apps', function (d) { return d.apps.map(function (a) { return a.appId + ' ' + a.appVersion + ' (' + a.status + ')' }).join(', ') }],
          ['Last enrolled', function (d) { return when(d.lastEnrolledAt) }]], r.items, function (d, td) {
          ['lock', 'unlock', 'wipe'].forEach(function (kind) {
            td.appendChild(button(kind[0].toUpperCase() + kind.slice(1), function () {
              if (kind === 'wipe' && !confirm('Wipe ' + d.deviceId + ' of ' + d.userName + '?')) return
              api('POST', '/admin/v1/devices/' + encodeURIComponent(d.userName) + '/' + encodeURIComponent(d.deviceId) + '/commands', { kind: kind })
                .then(function () { status(kind + ' sent to ' + d.deviceId) ; return views.devices() })
                .catch(function (e) { status(e.message, true) })
            }, { 'data-command': kind, 'data-device': d.deviceId }))
          })
        }))
      })
    },
    sessions: function () {
      return api('GET', '/admin/v1/sessions?open=true&limit=500').then(function (r) {
        show(table([['User', function (x) { return x.userName }], ['Device', function (x) { return x.deviceId }], ['App', function (x) { return x.appId + ' ' + x.appVersion }],
          ['Opened', function (x) { return when(x.createdAt) }], ['Last seen', function (x) { return when(x.lastSeenAt) }], ['Expires', function (x) { return when(x.expiresAt) }],
          ['Id hash', function (x) { return x.idHash.slice(0, 16) + '…' }]], r.items, function (x, td) {
          td.appendChild(button('Revoke', function () {
            api('POST', '/admin/v1/sessions/' + x.idHash + '/revoke', {}).then(function () { status('session revoked'); return views.sessions() })
              .catch(function (e) { status(e.message, true) })
          }, { 'data-revoke': x.idHash }))
        }))
      })
    },
    commands: function () {
      return api('GET', '/admin/v1/commands?limit=500').then(function (r) {
        show(table([['Issued', function (c) { return when(c.issuedAt) }], ['User', function (c) { return c.userName }], ['Device', function (c) { return c.deviceId }],
          ['Kind', function (c) { return c.kind + (c.appId ? ' (' + c.appId + ')' : '') }], ['State', function (c) { return c.state }], ['By', function (c) { return c.issuedBy }]], r.items))
      })
    },
    audit: function () {
      return api('GET', '/admin/v1/audit?limit=200').then(function (r) {
        show(table([['When', function (e) { return when(e.at) }], ['Actor', function (e) { return e.actor + ' (' + e.actorRole + ')' }], ['Action', function (e) { return e.action }],
          ['Target', function (e) { return e.target }], ['From', function (e) { return e.remote }], ['Details', function (e) { return JSON.stringify(e.details) }]], r.items))
      })
    },
    logs: function () {
      return api('GET', '/admin/v1/logs/errors?limit=200').then(function (r) {
        show(table([['Time', function (e) { return e.time }], ['Level', function (e) { return e.level }], ['Message', function (e) { return e.msg }],
          ['Fields', function (e) { return JSON.stringify(e.fields) }]], r.items))
      })
    },
  }

  function open(tab) {
    Array.prototype.forEach.call(document.querySelectorAll('#tabs button'), function (b) { b.setAttribute('aria-selected', String(b.getAttribute('data-tab') === tab)) })
    status('loading…')
    views[tab]().then(function () { status('') }).catch(function (e) { status(e.message, true) })
  }

  function showLogin() { me = null; $('app').hidden = true; $('logout').hidden = true; $('who').textContent = ''; $('login').hidden = false }
  function showApp(who) {
    me = who
    $('login').hidden = true; $('app').hidden = false; $('logout').hidden = false
    $('who').textContent = who.name + ' (' + who.role + ')'
    open('devices')
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('login-form').addEventListener('submit', function (ev) {
      ev.preventDefault()
      $('login-error').textContent = ''
      fetch('/admin/v1/login', { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: $('login-name').value, password: $('login-password').value }) })
        .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.error ? j.error.message : 'sign-in failed'); return j }) })
        .then(function (j) { csrf = j.csrfToken; sessionStorage.setItem('gh_csrf', csrf); $('login-password').value = ''; showApp(j.admin) })
        .catch(function (e) { $('login-error').textContent = e.message })
    })
    $('logout').addEventListener('click', function () {
      api('POST', '/admin/v1/logout', {}).catch(function () {}).then(function () { csrf = ''; sessionStorage.removeItem('gh_csrf'); showLogin() })
    })
    Array.prototype.forEach.call(document.querySelectorAll('#tabs button'), function (b) {
      b.addEventListener('click', function () { open(b.getAttribute('data-tab')) })
    })
    fetch('/admin/v1/me', { credentials: 'same-origin' }).then(function (r) {
      if (!r.ok) return showLogin()
      return r.json().then(function (j) { if (j.csrfToken) { csrf = j.csrfToken; sessionStorage.setItem('gh_csrf', csrf) } showApp(j) })
    }).catch(showLogin)
  })
})()
`
