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
    }
}

impl VmState {
    /// Whether `start` may boot a VM in this state.
    pub fn can_start(self) -> bool {
        matches!(self, VmState::Created | VmState::Stopped | VmState::Failed)
    }

    /// Whether a VMM may be running it, so `stop` has something to stop.
    pub fn can_stop(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Stopping
        )
    }

    /// Whether its guest is up: what `vm ssh`, `vm cp` and a shell need.
    pub fn is_running(self) -> bool {
        self == VmState::Running
    }
}

named_enum! {
    /// Whose a VM is: the user's, or the temporary VM of an image build.
    #[derive(Default)]
    pub enum VmRole ("VM role") {
        #[default]
        Vm = "vm",
        Build = "build",
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
        for name in ["", "Running", "paused", " running"] {
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
            [&VmState::Created, &VmState::Stopped, &VmState::Failed]
        );
        assert!(!VmState::Running.can_start() && VmState::Running.can_stop());
        assert!(!VmState::Deleting.can_stop() && !VmState::Deleting.can_start());
    }
}
