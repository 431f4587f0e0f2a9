// The loss family's ops defined outside loss.cpp. loss.cpp's OPFORGE_PLUGIN block
// (which adds loss.lstsq) calls these registration functions.
#pragma once

namespace opforge {
class PluginRegistrar;
}  // namespace opforge

namespace opforge_ops::loss {

/// Adds loss.mse, loss.huber, loss.bce_with_logits and loss.cross_entropy (losses.cpp).
void register_losses(opforge::PluginRegistrar& registrar);

}  // namespace opforge_ops::loss
