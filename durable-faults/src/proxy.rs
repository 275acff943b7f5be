//! A TCP proxy on 127.0.0.1 between the workers and PostgreSQL that cuts, refuses and stalls
//! connections on command: the network faults of the suite.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to connections right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    /// Connections accepted before a cut of this epoch are closed.
    cut_epoch: u64,
    /// New connections are accepted and closed at once (as if refused).
    refuse: bool,
    /// Every connection stops forwarding (bytes wait in the proxy).
    stall: bool,
    /// Connections with an id below this never forward again (a black hole: the peers are
    /// not told, as when a firewall forgets a connection).
    blackhole_below: u64,
}

/// The proxy; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<watch::Sender<State>>,
    next_id: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Closes every connection.
        self.state.send_modify(|s| s.cut_epoch += 1);
    }
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(State::default());
        let state = Arc::new(state);
        let next_id = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            Arc::clone(&state),
            Arc::clone(&next_id),
        ));
        Ok(Proxy {
            addr,
            state,
            next_id,
            accept,
        })
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Closes every open connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.cut_epoch += 1;
            s.refuse = true;
        });
    }

    /// Stops forwarding on every connection (open and new) until [`Proxy::heal`]; nothing is
    /// closed.
    pub fn stall(&self) {
        self.state.send_modify(|s| s.stall = true);
    }

    /// Makes every open connection a black hole, for good: it stays open and never forwards a
    /// byte again. New connections work.
    pub fn blackhole_open_connections(&self) {
        let below = self.next_id.load(Ordering::SeqCst);
        self.state.send_modify(|s| s.blackhole_below = below);
    }

    /// Ends a cut or a stall (black holes stay).
    pub fn heal(&self) {
        self.state.send_modify(|s| {
            s.refuse = false;
            s.stall = false;
        });
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: Arc<watch::Sender<State>>,
    next_id: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let now = *state.borrow();
        if now.refuse {
            drop(client);
            continue;
        }
        let rx = state.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let conn = Conn {
                id,
                epoch: now.cut_epoch,
            };
            // Either direction ending (EOF, error, cut) closes both.
            tokio::select! {
                _ = pipe(conn, cr, sw, rx.clone()) => {}
                _ = pipe(conn, sr, cw, rx) => {}
            }
        });
    }
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    id: u64,
    epoch: u64,
}

impl Conn {
    fn is_cut(self, s: &State) -> bool {
        s.cut_epoch > self.epoch
    }

    fn forwards(self, s: &State) -> bool {
        !s.stall && self.id >= s.blackhole_below
    }
}

async fn pipe<R, W>(conn: Conn, mut from: R, mut to: W, mut state: watch::Receiver<State>)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = state.changed() => {
                if changed.is_err() || conn.is_cut(&state.borrow()) {
                    return;
                }
                continue;
            }
        };
        // Hold the bytes while stalled; give up on a cut.
        loop {
            let s = *state.borrow_and_update();
            if conn.is_cut(&s) {
                return;
            }
            if conn.forwards(&s) {
                break;
            }
            if state.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
