// A plain Node HTTP backend with the keep-alive timeout given in milliseconds (Node announces
// it as `Keep-Alive: timeout=<seconds>` and closes a connection idle that long). Every answer
// says how many connections the server accepted and how many requests came on this one, so a
// test sees whether the proxy in front reused a connection. Prints "PORT <n>"; exits when its
// stdin (held by the test) closes.
const http = require('http');

let connections = 0;
const server = http.createServer((request, response) => {
  request.socket.requests = (request.socket.requests || 0) + 1;
  request.resume();
  request.on('end', () => {
    response.setHeader('Content-Type', 'application/json');
    response.end(JSON.stringify({ connections, onConnection: request.socket.requests }));
  });
});
server.keepAliveTimeout = Number(process.argv[2]);
server.on('connection', () => { connections += 1; });
server.listen(0, '127.0.0.1', () => console.log(`PORT ${server.address().port}`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
