//! The backend on threads of its own. [`backend_api::Backend`] is blocking and its
//! implementations need not be `Send` or `Sync` (the fake engine keeps its state in a
//! `RefCell`), so each lane opens its own backend with the factory on its own thread
//! and runs the jobs sent to it one by one. Two lanes: the poller's, and the user's
//! actions', so a `down` that takes seconds never freezes the live view.

use std::sync::Arc;
use std::sync::mpsc;

use backend_api::Backend;

use crate::Error;

/// Opens a backend: called once per lane, on that lane's thread.
pub type BackendFactory = Arc<dyn Fn() -> Result<Box<dyn Backend>, String> + Send + Sync>;

type Job = Box<dyn FnOnce(&dyn Backend) + Send>;

/// One thread that owns a backend.
struct Lane {
    jobs: mpsc::Sender<Job>,
}

impl Lane {
    fn open(name: &str, factory: BackendFactory) -> Result<Self, Error> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened, open_result) = mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name(format!("dashboard-{name}"))
            .spawn(move || {
                let backend = match factory() {
                    Ok(backend) => {
                        let _ = opened.send(Ok(()));
                        backend
                    }
                    Err(why) => {
                        let _ = opened.send(Err(why));
                        return;
                    }
                };
                for job in queue {
                    job(backend.as_ref());
                }
            })
            .map_err(|e| Error::Backend(e.to_string()))?;
        open_result
            .recv()
            .map_err(|_| Error::BackendGone)?
            .map_err(Error::Backend)?;
        Ok(Self { jobs })
    }

    async fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&dyn Backend) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |backend| {
                let _ = done.send(job(backend));
            }))
            .map_err(|_| Error::BackendGone)?;
        result.await.map_err(|_| Error::BackendGone)
    }
}

/// The poller's lane and the actions' lane.
pub struct Lanes {
    poll: Lane,
    act: Lane,
}

impl Lanes {
    /// Opens both lanes; fails when the backend cannot be opened.
    pub fn open(factory: BackendFactory) -> Result<Self, Error> {
        Ok(Self {
            poll: Lane::open("poll", Arc::clone(&factory))?,
            act: Lane::open("act", factory)?,
        })
    }

    /// Runs `job` on the poller's lane.
    pub async fn poll<T: Send + 'static>(
        &self,
        job: impl FnOnce(&dyn Backend) -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.poll.call(job).await
    }

    /// Runs `job` on the actions' lane.
    pub async fn act<T: Send + 'static>(
        &self,
        job: impl FnOnce(&dyn Backend) -> T + Send + 'static,
    ) -> Result<T, Error> {
        self.act.call(job).await
    }
}
