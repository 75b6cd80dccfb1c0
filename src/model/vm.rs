//! A VM's lifecycle state, its role and how its root filesystem is made.

use super::named_enum;

named_enum! {
    /// Where a VM is in its lifecycle.
    pub enum VmState ("VM state") {
        /// Its row exists; its disks and files are being made.
        Creating = "creating",
        Created = "created",
        Starting = "starting",
        Running = "running",
        Stopping = "stopping",
        Stopped = "stopped",
        Failed = "failed",
        /// Its removal has begun; only finishing it is left.
        Deleting = "deleting",
        /// Its VMM holds it with the vCPUs stopped: no guest progress.
        Paused = "paused",
        /// Its memory is being written to a snapshot; the VMM then ends.
        Suspending = "suspending",
        /// No VMM: its memory waits in a snapshot, `start` restores it.
        Suspended = "suspended",
        /// A VMM is restoring its snapshot.
        Restoring = "restoring",
        /// It is being snapshotted for a fork.
        Forking = "forking",
    }
}

impl VmState {
    /// Whether `start` may boot a VM in this state.
    pub fn can_start(self) -> bool {
        matches!(
            self,
            VmState::Created | VmState::Stopped | VmState::Failed | VmState::Suspended
        )
    }

    /// Whether a VMM may be running it, so `stop` has something to stop.
    pub fn can_stop(self) -> bool {
        matches!(
            self,
            VmState::Starting
                | VmState::Running
                | VmState::Stopping
                | VmState::Paused
                | VmState::Suspending
                | VmState::Restoring
                | VmState::Forking
        )
    }

    /// Whether it is shut down with nothing in memory anywhere: its disks
    /// alone say what it is (what `clone` copies).
    pub fn is_at_rest(self) -> bool {
        matches!(self, VmState::Created | VmState::Stopped | VmState::Failed)
    }

    /// Whether its guest is up: what `vm ssh`, `vm cp` and a shell need.
    pub fn is_running(self) -> bool {
        self == VmState::Running
    }

    /// The command that gets a VM in this state running, for VM `name`.
    pub fn to_run(self, name: &str) -> String {
        match self {
            VmState::Paused => format!("banger vm resume {name}"),
            _ => format!("banger vm start {name}"),
        }
    }
}

named_enum! {
    /// Whose a VM is: the user's, or the temporary VM of an image build.
    #[derive(Default)]
    pub enum VmRole ("VM role") {
        #[default]
        Vm = "vm",
        Build = "build",
        /// Booted once to become an image's warm template, then removed.
        Template = "template",
    }
}

named_enum! {
    /// How a VM's root filesystem is made.
    pub enum RootMode ("root mode") {
        /// Its own full copy of the image (reflink where the filesystem can).
        Clone = "clone",
        /// The image itself, read-only and shared, under a per-VM upper disk.
        Layered = "layered",
    }
}

named_enum! {
    /// What one of a VM's disks is for.
    pub enum DiskRole ("disk role") {
        /// The image's rootfs, shared read-only by its layered VMs.
        Image = "image",
        /// A layered VM's own writable layer.
        Upper = "upper",
        /// A cloned VM's own full rootfs.
        Root = "root",
        /// The extra work disk.
        Work = "work",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for state in VmState::ALL {
            assert_eq!(state.as_str().parse::<VmState>().unwrap(), *state);
            assert_eq!(
                serde_json::to_string(state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
        for name in ["", "Running", "pausing", " running"] {
            let err = name.parse::<VmState>().unwrap_err();
            assert!(
                err.to_string().starts_with(&format!(
                    "`{name}` is not a VM state (expected one of: creating,"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn guards_allow_what_the_lifecycle_allows() {
        let startable: Vec<_> = VmState::ALL.iter().filter(|s| s.can_start()).collect();
        assert_eq!(
            startable,
            [
                &VmState::Created,
                &VmState::Stopped,
                &VmState::Failed,
                &VmState::Suspended
            ]
        );
        let at_rest: Vec<_> = VmState::ALL.iter().filter(|s| s.is_at_rest()).collect();
        assert_eq!(
            at_rest,
            [&VmState::Created, &VmState::Stopped, &VmState::Failed]
        );
        assert!(!VmState::Running.can_start() && VmState::Running.can_stop());
        // A VMM holds a paused VM; none runs a suspended one.
        assert!(VmState::Paused.can_stop() && !VmState::Paused.is_running());
        assert!(!VmState::Suspended.can_stop());
        assert!(!VmState::Deleting.can_stop() && !VmState::Deleting.can_start());
    }
}
