extern crate self as launch_plugin_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub mod builder {
    wit_bindgen::generate!({
        world: "builder-plugin",
        path: "../../wit",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_builder",
        default_bindings_module: "launch_plugin_sdk::builder",
        runtime_path: "launch_plugin_sdk::__wit_bindgen::rt",
        debug: true,
    });
}

pub mod environment {
    wit_bindgen::generate!({
        world: "environment-plugin",
        path: "../../wit",
        with: {
            "launch:plugin/types@0.1.0": crate::builder::launch::plugin::types,
            "launch:plugin/log@0.1.0": crate::builder::launch::plugin::log,
            "launch:plugin/secrets@0.1.0": crate::builder::launch::plugin::secrets,
            "launch:plugin/plugin@0.1.0": crate::builder::exports::launch::plugin::plugin,
        },
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_environment",
        default_bindings_module: "launch_plugin_sdk::environment",
        runtime_path: "launch_plugin_sdk::__wit_bindgen::rt",
        debug: true,
    });
}
