// A SockJS echo server (Debian's node-sockjs) that also serves a test page and Debian's
// sockjs-client, so headless Chromium can try each SockJS transport through Sluice.
// Prints "PORT <n>". Exits when its stdin (held by the test) closes.
const http = require('http');
const fs = require('fs');
const path = require('path');
const sockjs = require('sockjs');

const clientScript = fs.readFileSync('/usr/share/nodejs/sockjs-client/dist/sockjs.min.js');
const page = fs.readFileSync(path.join(__dirname, 'sockjs_page.html'));

// A session survives 30 s without a poll: a loaded machine may pause the browser that long.
const echo = sockjs.createServer({ log: () => {}, disconnect_delay: 30000 });
echo.on('connection', (conn) => {
  conn.on('data', (message) => {
    if (message === 'ticks') {
      // Three pushes, each sent only once the client has acknowledged the one before: a proxy
      // that held a streamed push back (until the response ended, or more came) would stall the
      // chain, since the streaming response stays open. Causality, not timing, on a loaded machine.
      conn.write('tick 0');
    } else if (message.startsWith('ack ')) {
      const count = Number(message.slice(4));
      if (count < 2) conn.write(`tick ${count + 1}`);
    } else {
      conn.write(message);
    }
  });
});

const server = http.createServer((request, response) => {
  if (request.url === '/sockjs.js') {
    response.writeHead(200, { 'Content-Type': 'application/javascript' });
    response.end(clientScript);
  } else if (request.url.startsWith('/page')) {
    response.writeHead(200, { 'Content-Type': 'text/html' });
    response.end(page);
  } else {
    response.writeHead(404);
    response.end();
  }
});
echo.installHandlers(server, { prefix: '/echo' });
server.listen(0, '127.0.0.1', () => console.log(`PORT ${server.address().port}`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
