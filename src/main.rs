use kube::CustomResourceExt;
fn main() {
    for crd in invite_operator::api::all_crds() {
        print!("{}", invite_operator::api::crd_yaml(&crd));
    }
    let _ = invite_operator::api::UserInvitation::crd();
}
