from modelhub.roles import role_of


def roles(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "role": role_of(user),
        "can_upload": user.has_perm("ingestion.upload_data"),
        "can_retrain": user.has_perm("modelhub.retrain_model"),
        "can_deploy": user.has_perm("modelhub.deploy_modelversion"),
        "can_manage_batches": user.has_perm("ingestion.manage_batches"),
        "can_batch_predict": user.has_perm("modelhub.batch_predict"),
    }
