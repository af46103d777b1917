//! The seed's pipe example: a consumer process reads until EOF.
//!
//! Python:
//!
//! ```python
//! def consumer(left, right):
//!     left.close()
//!     while True:
//!         try:
//!             print(right.recv())
//!         except EOFError:
//!             break
//!
//! if __name__ == '__main__':
//!     left, right = Pipe()
//!     p = Process(target=consumer, args=(left, right))
//!     p.start()
//!     right.close()
//!     for i in range(10):
//!         left.send('hello')
//!     left.close()
//! ```
//!
//! EOF comes only once every copy of `left` is closed, in every process: the
//! child gets a copy of `left` and must drop it, or `recv` would wait forever.
//! (Here the parent's `right` moves into the child's arguments, so the parent
//! holds no copy of it; the parent's `left.close()` is the last one.)
//!
//! Run with `cargo run --example pipe_eof`.

use multiproc::{Connection, Pipe, Process, RecvError};

fn consumer((left, right): (Connection, Connection)) -> usize {
    left.close(); // without this the loop below never ends
    let mut n = 0;
    loop {
        match right.recv::<String>() {
            Ok(msg) => {
                println!("{msg}");
                n += 1;
            }
            Err(RecvError::Eof) => return n,
            Err(e) => panic!("recv failed: {e}"),
        }
    }
}

/// Runs the example (also called by the tour).
pub fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (left, right) = Pipe::new()?;
    // A quick one-process demo first, as in the seed.
    left.send(&"aaa".to_string())?;
    println!("{}", right.recv::<String>()?);

    let p = Process::spawn((left.try_clone()?, right), consumer)?;
    for _ in 0..10 {
        left.send(&"hello".to_string())?;
    }
    left.close();
    let received = p.join()?;
    println!("the consumer saw EOF after {received} messages");
    Ok(())
}

// `main` is unused when the tour includes this file as a module.
#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    run()
}
